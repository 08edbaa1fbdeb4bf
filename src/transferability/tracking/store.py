"""The MLflow store: where it is, and a client that waits for it.

The store is ``sqlite:///<repo root>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` says otherwise;
the repository root is found even when DVC runs a stage in a temporary copy of the repo
(`provenance.repo_root`). A locked store is waited for, never a reason to lose a result: SQLite
waits BUSY_TIMEOUT_S per statement, and every call is then retried with backoff for
RETRY_FOR_S. A fresh store is created under a lock file, since two processes migrating one
SQLite schema at once collide.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

from transferability.tracking.provenance import repo_root

EXPERIMENT = "transferability"
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
BUSY_TIMEOUT_S = 60.0  # SQLite's wait for a lock, unless the URI's ?timeout= says otherwise
RETRY_FOR_S = 300.0  # then a call that still finds the store locked is retried this long
# The runs table of MLflow 3's UI shows Source, Models and Dataset; a view shared the way its
# "Share" button does (an experiment tag) adds the commit, the key metrics and tags:
# #/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=study
RUNS_VIEW = "study"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW}"
RUNS_VIEW_COLUMNS = [
    *(f"attributes.`{c}`" for c in ("Source", "Version", "Dataset", "Models")),
    *(f"metrics.`{m}`" for m in ("final_test_acc", "final_train_acc", "base_test_acc_mean")),
    *(f"tags.`{t}`" for t in ("split", "treatment", "n", "seed", "dvc.experiment")),
]
log = logging.getLogger(__name__)


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # timeout: SQLite waits up to 60 s for a writer's lock instead of "database is locked"
    return f"sqlite:///{repo_root() / 'mlflow.db'}?timeout=60"


def _busy_timeout(conn, cursor, statement, parameters, context, executemany):
    """MLflow opens every SQLite session with ``PRAGMA busy_timeout = 20000`` (hard-coded in
    mlflow.store.db.utils, no setting), which overrides ?timeout=: put the URI's wait back."""
    if statement.startswith("PRAGMA busy_timeout ="):
        seconds = float(conn.engine.url.query.get("timeout", BUSY_TIMEOUT_S))
        statement = f"PRAGMA busy_timeout = {int(seconds * 1000)};"
    return statement, parameters


# SQLite errors that MLflow reports as TEMPORARILY_UNAVAILABLE but that waiting does not cure
LASTING = ("disk is full", "disk i/o error", "readonly", "read-only", "not a database", "malformed")


def _transient(e: Exception) -> bool:
    """A locked or unavailable store: MLflow wraps SQLAlchemy's OperationalError in that code.
    A full disk, a read-only or damaged store comes in the same wrapper, and fails at once."""
    text = str(e).lower()
    if any(s in text for s in LASTING):
        return False
    return getattr(e, "error_code", None) == "TEMPORARILY_UNAVAILABLE" or "locked" in text


def retry(call, *args, **kwargs):
    """call(*args, **kwargs), retried with exponential backoff while the store is locked."""
    deadline, delay = time.monotonic() + RETRY_FOR_S, 0.5
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as e:
            if not _transient(e) or time.monotonic() + delay > deadline:
                raise
            log.warning("MLflow store busy (%s); retrying in %.0f s", str(e)[:200], delay)
        time.sleep(delay)
        delay = min(2 * delay, 60.0)


class PatientClient:
    """An MlflowClient whose every method is retried while the store is locked."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        return partial(retry, getattr(self.client, name))


def ensure_store(uri: str | None = None) -> tuple[PatientClient, str]:
    """A client of the store and the id of the experiment, both created if need be.

    Two processes creating one fresh SQLite store race in MLflow's schema migrations
    ("duplicate column name"), so a lock file beside the db serialises them.
    """
    from filelock import FileLock
    from mlflow.tracking import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "before_cursor_execute", _busy_timeout):
        event.listen(Engine, "before_cursor_execute", _busy_timeout, retval=True)
    uri = uri or tracking_uri()
    lock, db = nullcontext(), sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{db}.lock")
    with lock:
        client = PatientClient(retry(MlflowClient, uri))
        exp = client.get_experiment_by_name(EXPERIMENT)
        view = json.dumps({"selectedColumns": RUNS_VIEW_COLUMNS})
        if exp:
            if exp.tags.get(RUNS_VIEW_TAG) != view:
                client.set_experiment_tag(exp.experiment_id, RUNS_VIEW_TAG, view)
            return client, exp.experiment_id
        # the UI opens a model-training experiment on its runs table, not on GenAI traces
        tags = {EXPERIMENT_KIND: MODEL_TRAINING, RUNS_VIEW_TAG: view}
        # MLflow's default artifact root for a SQLite store is ./mlruns of the process that
        # creates the experiment; under `dvc exp run --temp` that is a copy that is deleted, so
        # the experiment's artifacts are put in mlruns/ beside the db (the repository root)
        where = str(db.parent.resolve() / "mlruns" / EXPERIMENT) if db is not None else None
        return client, client.create_experiment(EXPERIMENT, artifact_location=where, tags=tags)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").partition("?")[0])
