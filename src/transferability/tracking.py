"""MLflow: one run per network trained, all under one parent run per study.

The store is ``sqlite:///<repo root>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` says otherwise;
the repository root is found even when DVC runs a stage in a temporary copy of the repo.
Only the process that runs the study writes to MLflow (networks are logged when they finish).
A locked store is waited for, never a reason to lose a result: SQLite waits BUSY_TIMEOUT_S per
statement, and every call is then retried with backoff for RETRY_FOR_S. A fresh store is
created under a lock file, since two processes migrating one SQLite schema at once collide.
Checkpoints stay with DVC: a run records their path and md5 (DVC's hash), not a copy; a base
network is also logged as an MLflow PyTorch model (a LoggedModel), loadable with
``mlflow.pytorch.load_model`` as a TransferNet: pickled, so loading it runs code from the store
and imports this package. Every run carries MLflow's source tags (``mlflow.source.git.commit``,
the UI's "Version"), the DVC experiment and stage it ran in (``dvc.experiment``, ``dvc.stage``,
from the DVC_EXP_NAME and DVC_STAGE that DVC gives stage commands), and the prepared data set as
an input whose digest is its md5 (the UI's "Dataset"). The report stage puts the study's headline
numbers, claims, figures and report on the parent run (`log_study_results`). With CUDA, MLflow's
system metrics (CPU, memory, disk, network; GPU where nvidia-ml-py is installed) are logged to
the parent run while a stage trains.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import contextmanager, nullcontext, suppress
from functools import cache, partial
from pathlib import Path

from transferability.config import Config
from transferability.io import md5_file

EXPERIMENT = "transferability"
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
BUSY_TIMEOUT_S = 60.0  # SQLite's wait for a lock, unless the URI's ?timeout= says otherwise
RETRY_FOR_S = 300.0  # then a call that still finds the store locked is retried this long
STATUSES = ("FINISHED", "FAILED", "KILLED")
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
DATASET = "cifar10-prepared"  # the name of the prepared data set as an MLflow input
MODEL = "model"  # the name of a base network's logged model
log = logging.getLogger(__name__)


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder with dvc.yaml or .git above `start`.

    ``dvc exp run --temp`` runs stages in a copy under <root>/.dvc/tmp/exps/...; the store then
    still belongs to the real root, so that copy is stepped out of.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    if ".dvc" in parts:
        here = Path(*parts[: parts.index(".dvc")])
    for p in (here, *here.parents):
        if (p / "dvc.yaml").is_file() or (p / ".git").exists():
            return p
    return here


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


class _Patient:
    """An MlflowClient whose every method is retried while the store is locked."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        return partial(retry, getattr(self.client, name))


def ensure_store(uri: str | None = None) -> tuple[_Patient, str]:
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
    lock = nullcontext()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").partition("?")[0])
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{db}.lock")
    with lock:
        client = _Patient(retry(MlflowClient, uri))
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
        where = None
        if uri.startswith("sqlite:///"):
            where = str(db.parent.resolve() / "mlruns" / EXPERIMENT)
        return client, client.create_experiment(EXPERIMENT, artifact_location=where, tags=tags)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@cache
def git_commit() -> str:
    return _git("rev-parse", "HEAD")


def repo_path(path: str | os.PathLike) -> str:
    """`path` relative to the root of the repository (or DVC temp copy) that holds it, else
    absolute: what a source or a file is called whichever copy of the repository ran."""
    p = Path(path).resolve()
    for base in p.parents:
        if (base / "dvc.yaml").is_file() or (base / ".git").exists():
            return p.relative_to(base).as_posix()
    return p.as_posix()


@cache
def source_tags() -> dict[str, str]:
    """MLflow's system tags of a run's source, as `mlflow.start_run` sets them, and the DVC
    experiment and stage (DVC sets DVC_EXP_NAME for `dvc exp run`, DVC_STAGE for every stage).
    The commit is the UI's "Version"; git.dirty says whether the work tree differed from it."""
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_BRANCH,
        MLFLOW_GIT_COMMIT,
        MLFLOW_GIT_DIRTY,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    main = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    tags = {
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_SOURCE_NAME: repo_path(main) if main and main.is_file() else "python",
    }
    with suppress(KeyError, OSError):  # a container user without a passwd entry has none
        tags[MLFLOW_USER] = getpass.getuser()
    if commit := git_commit():
        tags[MLFLOW_GIT_COMMIT] = commit
        branch = _git("rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":
            tags[MLFLOW_GIT_BRANCH] = branch
        tags[MLFLOW_GIT_DIRTY] = str(bool(_git("status", "--porcelain", "-uno"))).lower()
    for tag, var in (("dvc.experiment", "DVC_EXP_NAME"), ("dvc.stage", "DVC_STAGE")):
        if os.environ.get(var):
            tags[tag] = os.environ[var]
    return tags


def dataset_input(data_file: Path, md5: str, context: str = "training"):
    """The prepared data set as an MLflow dataset input: DVC's md5 as its digest, its path (in
    the real repository, not a DVC temp copy) as its source."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    where = repo_path(data_file)
    if not Path(where).is_absolute():
        where = (repo_root(Path(data_file).resolve().parent) / where).as_posix()
    ds = MetaDataset(LocalArtifactDatasetSource(where), name=DATASET, digest=md5)
    # mlflow.log_input's own conversion, for a run that is not the fluent API's active run
    return DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])


@contextmanager
def _fluent_uri(uri: str):
    """Point MLflow's fluent API (which `mlflow.pytorch.log_model` uses) at `uri` for a while.

    `mlflow.set_tracking_uri` cannot be undone without unsetting MLFLOW_TRACKING_URI, so the
    variable, which the fluent API reads when no URI was set, is set and restored instead."""
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        else:
            out[key] = str(v)[:500]
    return out


class Tracker:
    """Logs the networks of one study; `plan` is every network the study holds.

    As a context manager it never leaves the parent run RUNNING: leaving by an exception
    finishes it KILLED (Ctrl-C) or FAILED, unless `finish` already did.
    """

    def __init__(self, cfg: Config, study, plan, data_file: Path | None = None, create=True):
        self.uri = tracking_uri()
        try:
            self.client, self.experiment_id = ensure_store(self.uri)
        except Exception as e:  # SQLAlchemy's traceback names neither the store nor a remedy
            raise RuntimeError(
                f"MLflow store {self.uri} cannot be used ({type(e).__name__}: {str(e)[:300]}): "
                "free space or move a damaged store away (a new one is made), or run with "
                "--set study.mlflow=false"
            ) from e
        self.finished = ""
        self.monitor = None
        self.cfg = cfg
        has_data = data_file is not None and Path(data_file).is_file()
        self.data_file = Path(data_file) if has_data else None
        self.data_md5 = md5_file(data_file) if has_data else ""
        bases = sorted(study.fingerprint(j) for j in plan if j.treatment == "base")
        self.study_id = hashlib.sha256("/".join(bases).encode()).hexdigest()[:12]
        self.parent_id = self._parent(plan, create)

    def __enter__(self) -> Tracker:
        """A stage starts training: its parent run is RUNNING again (an earlier stage finished
        it), and on a GPU machine MLflow's system metrics are logged to it until `finish`."""
        if not self.finished:
            if self.client.get_run(self.parent_id).info.status != "RUNNING":
                self.client.update_run(self.parent_id, status="RUNNING")
            self._start_system_metrics()
        return self

    def __exit__(self, kind, error, tb) -> None:
        if not self.finished:  # KeyboardInterrupt or SystemExit: KILLED
            crashed = kind is not None and issubclass(kind, Exception)
            self.finish(status="FINISHED" if kind is None else "FAILED" if crashed else "KILLED")
        self._stop_system_metrics()

    def _start_system_metrics(self) -> None:
        """What `mlflow.start_run(log_system_metrics=True)` does, for this client-made run: a
        SystemMetricsMonitor thread logs system/* metrics every 10 s (MLflow's default; the
        MLFLOW_SYSTEM_METRICS_* variables change it), continuing the steps of an earlier stage.
        Only with CUDA: on a CPU machine the training job has the cores to itself. GPU metrics
        need nvidia-ml-py (pynvml); without it MLflow warns and logs the others."""
        import torch

        if self.monitor is not None or not torch.cuda.is_available():
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                self.parent_id, resume_logging=True, tracking_uri=self.uri
            )
            monitor.start()
            self.monitor = monitor
        except Exception as e:  # psutil missing, or the store busy: no system metrics
            log.warning("MLflow system metrics not logged: %s", e)

    def _stop_system_metrics(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None

    def _search(self, query: str):
        return self.client.search_runs([self.experiment_id], query, max_results=50000)

    def _parent(self, plan, create: bool = True) -> str:
        """The study's parent run ("" if there is none and not `create`)."""
        found = self._search(f"tags.study_id = '{self.study_id}' and tags.role = 'study'")
        if found and create:  # a later stage or experiment: the source is now the one that runs
            self._log(found[0].info.run_id, tags={**source_tags(), "git_commit": git_commit()})
        if found or not create:
            return found[0].info.run_id if found else ""
        splits = sorted({j.split for j in plan})
        sweep = "target-size sweep, " if any(j.per_class for j in plan) else ""
        name = f"{sweep}{self.cfg.model.arch} {'+'.join(splits)} ({self.study_id[:8]})"
        tags = {**source_tags(), "role": "study", "study_id": self.study_id}
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags=tags | {"git_commit": git_commit()}
        )
        self._log(run.info.run_id, params=_flatten(self.cfg.model_dump()))
        self._log_data(run.info.run_id)
        return run.info.run_id

    def _log_data(self, run_id: str) -> None:
        if self.data_file is not None:
            self.client.log_inputs(run_id, datasets=[dataset_input(self.data_file, self.data_md5)])

    def _delete(self, run) -> None:
        """Delete a run and the models it logged or began to log (left PENDING by a kill)."""
        models = {out.model_id for out in (run.outputs.model_outputs if run.outputs else []) or []}
        query = f"source_run_id = '{run.info.run_id}'"
        models |= {
            m.model_id for m in self.client.search_logged_models([self.experiment_id], query)
        }
        for model_id in sorted(models):
            self.client.delete_logged_model(model_id)
        self.client.delete_run(run.info.run_id)

    def repair(self) -> list[str]:
        """Delete what a study killed while logging left behind: child runs still RUNNING (every
        run `log_network` completes is FINISHED) and the models they left PENDING; the runner
        then logs their networks anew. Returns those networks."""
        stale = self._children("attributes.status = 'RUNNING'")
        for run in stale:
            self._delete(run)
        return sorted({r.data.tags.get("network", "") for r in stale})

    def _children(self, extra: str = ""):
        q = f"tags.mlflow.parentRunId = '{self.parent_id}'" + (f" and {extra}" if extra else "")
        return self._search(q)

    def prune(self, networks: set[str], dry_run: bool = False) -> list[str]:
        """Delete the runs of networks other than `networks` (with `dry_run`, only find them);
        returns the networks.

        Never automatic: a narrower study adds to the store, and only this removes runs."""
        gone = [r for r in self._children() if r.data.tags.get("network") not in networks]
        for run in [] if dry_run else gone:
            self._delete(run)
        return sorted({r.data.tags.get("network", "") for r in gone})

    def run_id_of(self, network: str) -> str:
        """The finished run of `network` ("" if none: one left RUNNING is not logged)."""
        runs = self._children(f"tags.network = '{network}' and attributes.status = 'FINISHED'")
        return runs[0].info.run_id if runs else ""

    def _log(self, run_id, params=None, metrics=None, tags=None, steps=None):
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, s) for (k, v, s) in (metrics or [])],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_network(self, job, row: dict, history: list[dict]) -> str:
        """Record one finished network, replacing any earlier run of it. Returns the run id."""
        for old in self._children(f"tags.network = '{job.network}'"):
            self._delete(old)
        ckpt = Path(row["checkpoint"])
        tags = {
            **source_tags(),
            "mlflow.parentRunId": self.parent_id,
            "network": job.network,
            "split": job.split,
            "split_kind": job.split_kind,
            "direction": job.direction or "-",
            "treatment": job.treatment,
            "n": job.n,
            "seed": job.seed,
            "arch": self.cfg.model.arch,
            "source_task": job.source_task or "-",
            "target_task": job.target_task,
            "source_network": row.get("source_network") or "-",
            "source_run": self.run_id_of(row["source_network"])
            if row.get("source_network")
            else "-",
            "git_commit": git_commit() or "-",
            "data_md5": self.data_md5 or "-",
            "checkpoint": ckpt.as_posix(),
            "checkpoint_md5": md5_file(ckpt) if ckpt.is_file() else "-",
            "fingerprint": row["fingerprint"],
            "precision": row.get("precision") or "fp32",
        }
        end = int(time.time() * 1000)  # logged when it finished: give the run its real span
        start = end - int(float(row["seconds"]) * 1000)
        run = self.client.create_run(
            self.experiment_id, run_name=job.network, tags=tags, start_time=start
        )
        run_id = run.info.run_id
        params = _flatten(self.cfg.model_dump(include={"data", "model", "train"}))
        params |= {"job.treatment": job.treatment, "job.n": str(job.n), "job.seed": str(job.seed)}
        metrics = [(k, h[k], h["epoch"]) for h in history for k in h if k != "epoch"]
        metrics.append(("seconds", row["seconds"], len(history)))
        metrics += [(f"final_{k}", row[k], len(history)) for k in ("test_acc", "train_acc")]
        try:
            self._log(run_id, params=params, metrics=metrics)
            self._log_data(run_id)
            if job.treatment == "base" and ckpt.is_file():
                self._log_model(run_id, job, ckpt)
        except BaseException:  # no half-logged run: the runner logs the network next time
            with suppress(Exception):
                self._delete(self.client.get_run(run_id))
            raise
        self.client.set_terminated(run_id, end_time=end)
        return run_id

    def _log_model(self, run_id: str, job, ckpt: Path) -> str:
        """Log a base network's checkpoint as an MLflow PyTorch model of its run; returns the
        model id. Pickled (the pt2 format would need an input example to trace, and would load
        as a graph, not a TransferNet), with a signature and pinned requirements given rather
        than inferred (inference runs the model in a subprocess)."""
        import mlflow.pytorch
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from transferability.models import load_checkpoint

        model, meta = load_checkpoint(ckpt)
        model.eval()
        size, classes = model.cfg.image_size, model.cfg.num_classes
        signature = ModelSignature(
            Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size), "images")]),
            Schema([TensorSpec(np.dtype(np.float32), (-1, classes), "logits")]),
        )
        # created here, in the study's experiment: log_model alone would put a model that has
        # no active run in the fluent API's default experiment
        logged = self.client.create_logged_model(
            self.experiment_id,
            name=job.network.replace("/", "-"),
            source_run_id=run_id,
            tags={"network": job.network, "treatment": job.treatment},
            model_type="TransferNet",
        )
        # MLflow warns at every pickled model that unpickling runs code: said once, in the
        # module docstring, not once per base
        quiet = logging.getLogger("mlflow.pytorch")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with _fluent_uri(self.uri):
                retry(
                    mlflow.pytorch.log_model,
                    model,
                    name=MODEL,
                    model_id=logged.model_id,
                    run_id=run_id,
                    signature=signature,
                    serialization_format="pickle",
                    pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                    metadata={"network": job.network, "classes": list(meta.get("classes", []))},
                )
        finally:
            quiet.setLevel(level)
        return logged.model_id

    def finish(self, failed: bool = False, status: str = "") -> None:
        """Close the parent run FINISHED, FAILED or KILLED (a later stage may log to it again)."""
        status = status or ("FAILED" if failed else "FINISHED")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self._stop_system_metrics()
        self.client.set_terminated(self.parent_id, status=status)
        self.finished = status


# ---------------------------------------------------------------------- the report stage


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict, keys joined with '.'; text, booleans, nulls and NaN
    (a gap a study cannot estimate) are left out."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _numbers(v, key + ".")
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def _float(text: str | None) -> float | None:
    try:
        x = float(text or "")
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def study_summary(results_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and tags a study's parent run carries: every number of metrics.json (base
    accuracy, gaps per split kind/gap/cut, Table 1, ...), and per claim of claims.csv its
    estimate and interval (points) as claim.<name>.* metrics and its verdict as tag claim.<name>."""
    metrics, tags = {}, {}
    if (path := results_dir / "metrics.json").is_file():
        metrics |= _numbers(json.loads(path.read_text()))
    if (path := results_dir / "claims.csv").is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                name = row["claim"]
                for col in ("estimate", "ci_low", "ci_high", "blocks"):
                    if (x := _float(row.get(col))) is not None:
                        metrics[f"claim.{name}.{col}"] = x
                tags[f"claim.{name}"] = row.get("verdict") or "-"
    return metrics, tags


def _artifact_dir(path: Path) -> str:
    if path.name.startswith("fig_"):
        return "figures"
    return "results" if path.suffix in (".csv", ".json") else "report"


def log_study_results(
    results_dir: Path, artifacts: Iterable[Path] = (), uri: str | None = None
) -> list[str]:
    """Put a study's summary on its parent run(s): the parents of the networks in
    results_dir/runs.csv get `study_summary`'s metrics and tags, and `artifacts` (figures under
    figures/, tables under results/, the rest under report/). Returns the parent run ids.

    For the report stage, which must not fail for MLflow's sake: with no store, no parent run,
    or an error, it prints a note and returns what it logged to."""
    results_dir, uri = Path(results_dir), uri or tracking_uri()

    def note(text: str) -> list[str]:
        print(f"report: MLflow: {text}")
        return []

    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").partition("?")[0])
        if not db.is_file():
            return note(f"no store at {db}; the study's summary is not logged")
    if not (results_dir / "runs.csv").is_file():
        return note(f"no {results_dir / 'runs.csv'}; the study's summary is not logged")
    try:
        return _log_study_results(results_dir, [Path(a) for a in artifacts], uri, note)
    except Exception as e:
        return note(f"the study's summary is not logged ({type(e).__name__}: {str(e)[:300]})")


def _log_study_results(results_dir, artifacts, uri, note) -> list[str]:
    from mlflow.entities import Metric, RunTag

    with open(results_dir / "runs.csv", newline="") as f:
        # a network is its name and fingerprint: profiles reuse names (random0/s0/baseA)
        networks = {(r["network"], r.get("fingerprint", "")) for r in csv.DictReader(f)}
    client, experiment_id = ensure_store(uri)
    runs = client.search_runs([experiment_id], max_results=50000)
    parents = sorted(
        {
            r.data.tags["mlflow.parentRunId"]
            for r in runs
            if (r.data.tags.get("network"), r.data.tags.get("fingerprint", "")) in networks
            and r.data.tags.get("mlflow.parentRunId")
        }
    )
    parents = [p for p in parents if client.get_run(p).info.lifecycle_stage == "active"]
    if not parents:
        return note(f"no parent run holds the networks of {results_dir / 'runs.csv'}")
    metrics, tags = study_summary(results_dir)
    missing = [a for a in artifacts if not a.is_file()]
    now = int(time.time() * 1000)
    for parent in parents:
        ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
        ts = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(ms), len(ts)), 100):  # log_batch: 1000 metrics, 100 tags
            client.log_batch(parent, metrics=ms[i : i + 100], tags=ts[i : i + 100])
        for path in artifacts:
            if path.is_file():
                client.log_artifact(parent, str(path), _artifact_dir(path))
    logged = len(artifacts) - len(missing)
    note(
        f"{len(metrics)} metrics, {len(tags)} claim verdicts and {logged} files logged to parent "
        f"run(s) {', '.join(parents)}"
        + (f"; not found: {', '.join(map(str, missing))}" if missing else "")
    )
    return parents
