"""The Tracker: one MLflow run per network trained, all under one parent run per study, and
beside them one run per block of diagnostics (beyond the paper).

Only the process that runs the study writes to MLflow (networks are logged when they finish).
Checkpoints stay with DVC: a run records their path and md5 (DVC's hash) in its tags, its
description and a small `checkpoint.json` artifact, not a copy; a base network is also logged
as an MLflow PyTorch model (a LoggedModel) and registered in the model registry as
`<study>.<split>.s<seed>.base<task>`, loadable with ``mlflow.pytorch.load_model`` as a
TransferNet: pickled, so loading it runs code from the store and imports this package. With
CUDA, MLflow's system metrics (CPU, memory, disk, network; GPU where nvidia-ml-py is installed)
are logged to the parent run while a stage trains.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from transferability.config import Config
from transferability.io import md5_file
from transferability.networks import COPY_FROM_SOURCE, COPY_FROM_TARGET, FROZEN
from transferability.place import identify
from transferability.tracking.provenance import dataset_input, git_commit, source_tags
from transferability.tracking.store import ensure_store, retry, tracking_uri

STATUSES = ("FINISHED", "FAILED", "KILLED")
DIAGNOSTICS = "diagnostics"  # the role tag of a block's diagnostics run
MODEL = "model"  # the name of a base network's logged model
log = logging.getLogger(__name__)


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

    def __init__(self, cfg: Config, networks, plan, data_file: Path | None = None, create=True):
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
        self.dataset_name = f"{identify(cfg, networks.dataset.classes).name} prepared"
        self.base_fingerprints = {
            j.network: networks.fingerprint(j) for j in plan if j.treatment == "base"
        }
        bases = sorted(self.base_fingerprints.values())
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
            inputs = [dataset_input(self.data_file, self.data_md5, self.dataset_name)]
            self.client.log_inputs(run_id, datasets=inputs)

    def _delete(self, run) -> None:
        """Delete a run and the models it logged or began to log (left PENDING by a kill)."""
        models = {out.model_id for out in (run.outputs.model_outputs if run.outputs else []) or []}
        query = f"source_run_id = '{run.info.run_id}'"
        models |= {
            m.model_id for m in self.client.search_logged_models([self.experiment_id], query)
        }
        for version in self.client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            self.client.delete_model_version(version.name, version.version)
            if not self.client.search_model_versions(f"name = '{version.name}'"):
                self.client.delete_registered_model(version.name)
        for model_id in sorted(models):
            self.client.delete_logged_model(model_id)
        self.client.delete_run(run.info.run_id)

    def repair(self) -> list[str]:
        """Delete what a study killed while logging left behind: child runs still RUNNING (every
        run `log_network` and `log_diagnostics` completes is FINISHED) and the models they left
        PENDING; the runner then logs their networks anew (a block's diagnostics, the next
        diagnostics stage). Returns those networks."""
        stale = self._children("attributes.status = 'RUNNING'")
        for run in stale:
            self._delete(run)
        return sorted({r.data.tags["network"] for r in stale if r.data.tags.get("network")})

    def _children(self, extra: str = ""):
        q = f"tags.mlflow.parentRunId = '{self.parent_id}'" + (f" and {extra}" if extra else "")
        return self._search(q)

    def prune(self, networks: set[str], dry_run: bool = False) -> list[str]:
        """Delete the runs of networks other than `networks`, and the diagnostics runs of blocks
        none of them is in (with `dry_run`, only find them); returns the networks and those
        runs' names (`diagnostics · <block>`).

        Never automatic: a narrower study adds to the store, and only this removes runs."""
        blocks = {n.rsplit("/", 1)[0] for n in networks}

        def kept(run) -> bool:
            tags = run.data.tags
            if tags.get("role") == DIAGNOSTICS:
                return tags.get("block") in blocks
            return tags.get("network") in networks

        gone = [r for r in self._children() if not kept(r)]
        for run in [] if dry_run else gone:
            self._delete(run)
        return sorted({r.data.tags.get("network") or _diagnostics_name(r.data.tags) for r in gone})

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
        tags["mlflow.note.content"] = self._note(job, row, tags)  # the run page's description
        run = self.client.create_run(
            self.experiment_id, run_name=run_name(job), tags=tags, start_time=start
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
            pointer = {k: tags[k] for k in ("network", "checkpoint", "checkpoint_md5")}
            pointer |= {"fingerprint": row["fingerprint"], "dvc_stage": _stage_of(job)}
            self.client.log_dict(run_id, pointer, "checkpoint.json")
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
        name = self.registered_name(job)
        if not self.client.search_registered_models(f"name = '{name}'"):
            retry(self.client.create_registered_model, name, tags={"network": job.network})
        retry(
            self.client.create_model_version,
            name,
            source=logged.artifact_location,
            run_id=run_id,
            model_id=logged.model_id,
            tags={"network": job.network, "fingerprint": str(meta.get("fingerprint", "-"))},
        )
        return logged.model_id

    def registered_name(self, job) -> str:
        """A base's name in the model registry: its study (the results folder: `reference` for
        results/, `whole` for results/whole) and its network, e.g. reference.random0.s0.baseA."""
        folder = Path(self.cfg.study.results_dir).name
        study = "reference" if folder == "results" else folder
        return ".".join([study, *job.network.split("/")])

    def _note(self, job, row: dict, tags: dict) -> str:
        """The run's description (markdown, on its page in the UI): what it is and where its
        checkpoint and its source are."""
        t = job.treatment  # worded from the treatments' definition in networks.py
        origin = (
            "copied from its own task's base"
            if t in COPY_FROM_TARGET
            else "copied from the other task's base"
            if t in COPY_FROM_SOURCE
            else "left at random initialisation"
        )
        kept = "frozen" if t in FROZEN else "fine-tuned"
        what = "trained from scratch" if t == "base" else f"layers 1–{job.n} {origin}, {kept}"
        lines = [
            f"**{job.network}** ({job.treatment}, n = {job.n}): {what}; the rest trained on "
            f"task {job.target_task}.",
            "",
            f"Checkpoint: `{tags['checkpoint']}` (md5 `{tags['checkpoint_md5']}`), an output of "
            f"the DVC stage `{_stage_of(job)}` (`dvc pull` or `dvc repro` brings it); load it "
            "with `transferability.models.load_checkpoint(path)`.",
        ]
        if tags.get("source_run", "-") != "-":
            lines += [
                "",
                f"Source: [{tags['source_network']}](#/experiments/{self.experiment_id}/runs/"
                f"{tags['source_run']}?workflowType=machine_learning).",
            ]
        if job.treatment == "base":
            lines += ["", f"Registered model: `{self.registered_name(job)}`."]
        return "\n".join(lines)

    def log_diagnostics(self, table, precision: str) -> dict[str, str]:
        """Record the diagnostics stage's table (diagnostics.COLUMNS): one run per block, under
        the parent run of the block's bases (a study trained block by block, as by_block.sh
        does, has one per block; else the study's), with each row's accuracy, validation
        accuracy and value as metrics (`diagnostic_metric` names them; an interpolation's points
        are the steps 0, 1, ... of one metric, from AnB+ to the other end), the block's rows as
        diagnostics.csv and the beyond.* settings as params. A block's earlier run is deleted
        once its new one is complete. Returns {block: run id}; a block whose bases have no run
        (and no study parent) is left out."""
        ids = {}
        for (split, seed), rows in table.groupby(["split", "seed"], sort=True):
            block = f"{split}/s{seed}"
            parent = self._block_parent(block)
            if not parent:
                continue
            names, seconds = sorted(set(rows.diagnostic)), float(rows.seconds.sum())
            tags = {
                **source_tags(),
                "mlflow.parentRunId": parent,
                "role": DIAGNOSTICS,
                "block": block,
                "split": split,
                "seed": seed,
                "diagnostics": ",".join(names),
                "precision": precision,
                "git_commit": git_commit() or "-",
                "mlflow.note.content": (
                    f"**Diagnostics of block {block}** (beyond the paper): {', '.join(names)} "
                    "on its networks' checkpoints. `accuracy` is on the test images of the "
                    "task scored (the target; a reset base's own task), `value` is the "
                    "reference minus it (the stitching penalty, a reset layer's drop, the "
                    "shortfall below the line, AnB+'s edge over the scale-matched start). The "
                    "rows: `diagnostics.csv` here, and the study's diagnostics.csv."
                ),
            }
            metrics = [("seconds", seconds, 0)]
            for _, path in rows.groupby(
                [rows.diagnostic, rows.direction, rows.task, rows.n, rows.variant],
                sort=False,
                dropna=False,
            ):
                for step, r in enumerate(path.sort_values("alpha").itertuples()):
                    for col in ("accuracy", "val_accuracy", "value"):
                        x = float(getattr(r, col))
                        if math.isfinite(x):
                            metrics.append((f"{diagnostic_metric(r)}/{col}", x, step))
            old = self._search(
                f"tags.mlflow.parentRunId = '{parent}' and tags.role = '{DIAGNOSTICS}' and "
                f"tags.block = '{block}'"
            )
            end = int(time.time() * 1000)
            start = end - int(seconds * 1000)
            run = self.client.create_run(
                self.experiment_id, run_name=_diagnostics_name(tags), tags=tags, start_time=start
            )
            try:
                self._log(run.info.run_id, params=_flatten(self.cfg.beyond.model_dump(), "beyond."))
                for i in range(0, len(metrics), 1000):  # log_batch: at most 1000 metrics
                    self._log(run.info.run_id, metrics=metrics[i : i + 1000])
                self.client.log_text(run.info.run_id, rows.to_csv(index=False), "diagnostics.csv")
                self.client.set_terminated(run.info.run_id, end_time=end)
            except BaseException:  # no half-logged block: the earlier run, if any, stays
                with suppress(Exception):
                    self.client.delete_run(run.info.run_id)
                raise
            for earlier in old:
                self._delete(earlier)
            ids[block] = run.info.run_id
        return ids

    def _block_parent(self, block: str) -> str:
        """The parent run of `block`'s bases as this study configures them (their fingerprints),
        else the study's own ("" if neither)."""
        for network, fingerprint in sorted(self.base_fingerprints.items()):
            if network.rsplit("/", 1)[0] != block:
                continue
            query = f"tags.network = '{network}' and tags.fingerprint = '{fingerprint}'"
            for run in self._search(query + " and attributes.status = 'FINISHED'"):
                if parent := run.data.tags.get("mlflow.parentRunId"):
                    return parent
        return self.parent_id

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run FINISHED, FAILED or KILLED (a later stage may log to it again)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self._stop_system_metrics()
        self.client.set_terminated(self.parent_id, status=status)
        self.finished = status


def diagnostic_metric(row) -> str:
    """A diagnostics row's metric name (MLflow allows no `>` or `+`): diagnostic, direction (a
    base's own task for reinit), cut, variant, e.g. stitching/A_to_B/n3/trained,
    interpolation/B_to_A/n2/to_BnBplus, reinit/task_A/n1/fresh."""
    direction = row.direction if isinstance(row.direction, str) else ""  # NaN read from a CSV
    where = direction.replace("->", "_to_") if direction else f"task_{row.task}"
    variant = str(row.variant).replace("+", "plus").replace(" ", "_")
    return f"{row.diagnostic}/{where}/n{int(row.n)}/{variant}"


def _diagnostics_name(tags: dict) -> str:
    return f"diagnostics · {tags.get('block', '')}"


def run_name(job) -> str:
    """What the UI's runs table shows first: the network's own name, then where it belongs
    (`B4A+ · dissimilar/s0`), so that a cut column still says which network it is."""
    return f"{job.name} · {job.network.rsplit('/', 1)[0]}"


def _stage_of(job) -> str:
    """The DVC stage whose output holds the network's checkpoint."""
    if job.per_class:
        return "datasize"
    return "train_base" if job.treatment == "base" else "transfer"
