"""MLflow: one run per network trained, all under one parent run per study.

The store is ``sqlite:///<repo root>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` says otherwise;
the repository root is found even when DVC runs a stage in a temporary copy of the repo.
Only the process that runs the study writes to MLflow (networks are logged when they finish),
and SQLite waits for a lock instead of failing, so concurrent writers do not collide.
Checkpoints stay with DVC: a run records their path and md5 (DVC's hash), not a copy.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from functools import cache
from pathlib import Path

from transferability.config import Config

EXPERIMENT = "transferability"
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


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


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@cache
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


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
    """Logs the networks of one study; `plan` is every network the study holds."""

    def __init__(self, cfg: Config, study, plan, data_file: Path | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.client = MlflowClient(tracking_uri())
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        self.experiment_id = exp.experiment_id if exp else self._create_experiment()
        self.cfg = cfg
        self.data_md5 = md5_file(data_file) if data_file and Path(data_file).is_file() else ""
        bases = sorted(study.fingerprint(j) for j in plan if j.treatment == "base")
        self.study_id = hashlib.sha256("/".join(bases).encode()).hexdigest()[:12]
        self.parent_id = self._parent(plan)
        self._prune({j.network for j in plan})

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            # the UI opens a model-training experiment on its runs table, not on GenAI traces
            return self.client.create_experiment(EXPERIMENT, tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(EXPERIMENT).experiment_id

    def _search(self, query: str):
        return self.client.search_runs([self.experiment_id], query, max_results=50000)

    def _parent(self, plan) -> str:
        found = self._search(f"tags.study_id = '{self.study_id}' and tags.role = 'study'")
        if found:
            return found[0].info.run_id
        splits = sorted({j.split for j in plan})
        name = f"{self.cfg.model.arch} {'+'.join(splits)} ({self.study_id[:8]})"
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"role": "study", "study_id": self.study_id, "git_commit": git_commit()},
        )
        self._log(run.info.run_id, params=_flatten(self.cfg.model_dump()))
        return run.info.run_id

    def _children(self, extra: str = ""):
        q = f"tags.mlflow.parentRunId = '{self.parent_id}'" + (f" and {extra}" if extra else "")
        return self._search(q)

    def _prune(self, networks: set[str]) -> None:
        """Delete runs of networks the study no longer holds: one run per results row."""
        for run in self._children():
            if run.data.tags.get("network") not in networks:
                self.client.delete_run(run.info.run_id)

    def run_id_of(self, network: str) -> str:
        runs = self._children(f"tags.network = '{network}'")
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
            self.client.delete_run(old.info.run_id)
        ckpt = Path(row["checkpoint"])
        tags = {
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
            "source_run": self.run_id_of(row["source_network"]) if row.get("source_network")
            else "-",
            "git_commit": git_commit() or "-",
            "data_md5": self.data_md5 or "-",
            "checkpoint": ckpt.as_posix(),
            "checkpoint_md5": md5_file(ckpt) if ckpt.is_file() else "-",
            "fingerprint": row["fingerprint"],
        }  # fmt: skip
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
        self._log(run_id, params=params, metrics=metrics)
        self.client.set_terminated(run_id, end_time=end)
        return run_id

    def finish(self, failed: bool = False) -> None:
        """Close the parent run (a later stage of the same study may log to it again)."""
        self.client.set_terminated(self.parent_id, status="FAILED" if failed else "FINISHED")
