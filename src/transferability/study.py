"""Which networks a study needs, in dependency order, and running them resumably.

Naming follows the paper. For a direction S->T (source task S, target task T) and a cut n:

- ``baseT``: trained from scratch on T (n = 0);
- ``TnT`` (treatment BnB): first n layers copied from baseT and frozen; ``TnT+`` (BnB+) fine-tuned;
- ``SnT`` (AnB): first n layers copied from baseS and frozen; ``SnT+`` (AnB+) fine-tuned;
- ``RnT`` (RnB): first n layers left at their random initialisation and frozen.

Layers above n start from a fresh initialisation. Every network of one (split, seed, target
task) starts from the same random initialisation and sees the same batch order, so that the
treatments differ only in what they copy and freeze (common random numbers: paired gaps
between treatments carry less noise). Different seeds give independent replicates.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from transferability import data as data_mod
from transferability.config import Config
from transferability.executors import execute
from transferability.io import atomic_write
from transferability.models import NetConfig, build, copy_layers, load_checkpoint, save_checkpoint
from transferability.splits import Split
from transferability.train import DeviceTask, resolve_device, train

COPY_FROM_TARGET = {"BnB", "BnB+"}
COPY_FROM_SOURCE = {"AnB", "AnB+"}
FROZEN = {"BnB", "AnB", "RnB"}

COLUMNS = [
    "network", "split", "split_kind", "direction", "source_task", "target_task", "treatment",
    "n", "seed", "arch", "width", "train_images", "test_images", "epochs", "test_acc",
    "train_acc", "train_loss", "seconds", "checkpoint", "source_network", "fingerprint",
]  # fmt: skip


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across runs and platforms."""
    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


@dataclass(frozen=True)
class Job:
    split: str
    split_kind: str
    seed: int
    direction: str  # "A->B" / "B->A"; "" for a base
    source_task: str  # "" for a base
    target_task: str
    treatment: str  # base | BnB | BnB+ | AnB | AnB+ | RnB
    n: int

    @property
    def name(self) -> str:
        s, t, n = self.source_task, self.target_task, self.n
        return {
            "base": f"base{t}",
            "BnB": f"{t}{n}{t}",
            "BnB+": f"{t}{n}{t}+",
            "AnB": f"{s}{n}{t}",
            "AnB+": f"{s}{n}{t}+",
            "RnB": f"R{n}{t}",
        }[self.treatment]

    @property
    def network(self) -> str:
        return f"{self.split}/s{self.seed}/{self.name}"

    @property
    def source(self) -> Job | None:
        """The base network whose layers this one copies."""
        if self.treatment in COPY_FROM_TARGET:
            task = self.target_task
        elif self.treatment in COPY_FROM_SOURCE:
            task = self.source_task
        else:
            return None
        return base_job(self.split, self.split_kind, self.seed, task)


def base_job(split: str, kind: str, seed: int, task: str) -> Job:
    return Job(split, kind, seed, "", "", task, "base", 0)


def plan(cfg: Config, splits: list[Split]) -> list[Job]:
    """Every network of the study: all bases first, then the transfers, in a stable order."""
    bases, transfers = [], []
    for split in splits:
        for seed in cfg.study.seeds:
            bases += [base_job(split.name, split.kind, seed, t) for t in ("A", "B")]
            for direction in cfg.study.directions:
                s, t = direction.split("->")
                for n in cfg.cuts:
                    for treatment in cfg.study.treatments:
                        transfers.append(Job(split.name, split.kind, seed, direction, s, t,
                                             treatment, n))  # fmt: skip
    return bases + transfers


class Study:
    """Runs the jobs of a study against one prepared dataset, skipping finished networks."""

    def __init__(self, cfg: Config, splits: list[Split], dataset: data_mod.Dataset):
        self.cfg = cfg
        self.splits = {s.name: s for s in splits}
        self.dataset = dataset
        self.device = resolve_device(cfg.train.device)
        self._tasks: dict[tuple[str, str], DeviceTask] = {}

    # ------------------------------------------------------------------ identity

    def fingerprint(self, job: Job) -> str:
        """A hash of everything that determines a network; a changed setting retrains it."""
        c = self.cfg
        split = self.splits[job.split]
        train_cfg = c.train.model_dump(exclude={"device", "threads", "progress", "eval_batch_size"})
        ident = {
            "job": asdict(job),
            "classes": [list(split.A), list(split.B)],
            "data": [self.dataset.source_hash, self.dataset.image_size,
                     c.data.train_per_class, c.data.test_per_class],
            "model": c.model.model_dump(),
            "train": train_cfg,
            "source": self.fingerprint(job.source) if job.source else None,
        }  # fmt: skip
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def checkpoint(self, job: Job) -> Path:
        kind = "bases" if job.treatment == "base" else "transfers"  # two DVC outputs
        return Path(self.cfg.study.models_dir, kind, job.split, f"s{job.seed}", f"{job.name}.pt")

    def net_config(self, num_classes: int) -> NetConfig:
        m = self.cfg.model
        return NetConfig(m.arch, num_classes, m.width, self.dataset.image_size, m.dropout)

    # ------------------------------------------------------------------ running

    def task(self, split: str, task: str) -> DeviceTask:
        key = (split, task)
        if key not in self._tasks:
            self._tasks.clear()  # keep one task on the device at a time
            view = data_mod.task_view(
                self.dataset,
                self.splits[split].classes(task),
                self.cfg.data.train_per_class,
                self.cfg.data.test_per_class,
            )
            self._tasks[key] = DeviceTask.from_task(view, self.device)
        return self._tasks[key]

    def build(self, job: Job):
        """The network of `job` before training: fresh init, copied and frozen layers set."""
        split = self.splits[job.split]
        classes = split.classes(job.target_task)
        model = build(self.net_config(len(classes)), derive_seed("init", job.split, job.seed,
                                                                 job.target_task))  # fmt: skip
        if job.source is not None:
            path = self.checkpoint(job.source)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{job.network} needs the base checkpoint {path}: train the bases first"
                )
            src, _ = load_checkpoint(path)
            copy_layers(model, src, job.n, src_name=str(path))
        if job.treatment in FROZEN:
            model.freeze(job.n)
        return model

    def run(self, job: Job) -> tuple[dict, list[dict]]:
        """Train one network, write its checkpoint atomically; return its row and history."""
        model = self.build(job)
        data = self.task(job.split, job.target_task)
        result = train(
            model,
            data,
            self.cfg.train,
            seed=derive_seed("data", job.split, job.seed, job.target_task),
            desc=job.network,
        )
        path = self.checkpoint(job)
        fingerprint = self.fingerprint(job)
        row = {
            "network": job.network,
            "split": job.split,
            "split_kind": job.split_kind,
            "direction": job.direction,
            "source_task": job.source_task,
            "target_task": job.target_task,
            "treatment": job.treatment,
            "n": job.n,
            "seed": job.seed,
            "arch": self.cfg.model.arch,
            "width": self.cfg.model.width,
            "train_images": len(data.train_x),
            "test_images": len(data.test_x),
            "epochs": self.cfg.train.epochs,
            "test_acc": round(result.test_acc, 6),
            "train_acc": round(result.train_acc, 6),
            "train_loss": round(result.train_loss, 6),
            "seconds": round(result.seconds, 2),
            "checkpoint": path.as_posix(),
            "source_network": job.source.network if job.source else "",
            "fingerprint": fingerprint,
        }
        meta = {k: row[k] for k in ("network", "split", "treatment", "n", "seed", "fingerprint")}
        meta["classes"] = self.splits[job.split].classes(job.target_task)
        meta["history"] = result.history
        save_checkpoint(path, model, meta)
        return row, result.history


# ---------------------------------------------------------------------- results table


def read_runs(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_runs(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole table atomically: a crash leaves the old table or the new, never half."""
    with atomic_write(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})


def run_study(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    runs_path: Path,
    which: str = "all",
    log=print,
) -> list[dict]:
    """Train every network of `which` (all | bases | transfers) not already done; returns the rows.

    A network counts as done when runs_path has its row with the current fingerprint and its
    checkpoint exists; anything else is (re)trained. Each finished network is committed at once
    (checkpoint, then the table rewritten atomically), so an interrupted study loses at most
    the network in progress. With study.mlflow, every network is one MLflow run (logged before
    its row is written, so that a resumed study never holds a row without its run).
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    study = Study(cfg, splits, dataset)
    everything = plan(cfg, splits)
    if which == "bases":
        jobs = [j for j in everything if j.treatment == "base"]
    elif which == "transfers":
        jobs = [j for j in everything if j.treatment != "base"]
    elif which == "all":
        jobs = everything
    else:
        raise ValueError(f"which must be all, bases or transfers, not {which!r}")
    # rows of networks no longer in the study are dropped: the table describes this study
    wanted = {j.network for j in everything}
    existing = read_runs(runs_path)
    rows = {r["network"]: r for r in existing if r["network"] in wanted}
    if len(rows) < len(existing):
        write_runs(runs_path, [rows[j.network] for j in everything if j.network in rows])
    todo = [
        j
        for j in jobs
        if not (
            j.network in rows
            and rows[j.network]["fingerprint"] == study.fingerprint(j)
            and study.checkpoint(j).is_file()
        )
    ]
    if which == "transfers":  # the bases come from an earlier run: say so before starting
        missing = sorted({str(study.checkpoint(j.source)) for j in todo
                          if j.source and not study.checkpoint(j.source).is_file()})  # fmt: skip
        if missing:
            raise FileNotFoundError(
                f"base checkpoint(s) missing: {', '.join(missing)}: train the bases first"
            )
    where = (f"{cfg.study.workers} local workers" if cfg.study.executor == "local"
             and cfg.study.workers > 1 else cfg.study.executor)  # fmt: skip
    log(f"{len(jobs)} networks in this study ({which}); {len(jobs) - len(todo)} done, "
        f"{len(todo)} to train on {study.device} ({where})")  # fmt: skip
    tracker = None
    if cfg.study.mlflow:
        from transferability.tracking import Tracker

        tracker = Tracker(cfg, study, everything, Path(cfg.data.prepared))
        for job in jobs:  # finished networks that have no run yet (e.g. trained untracked)
            if job not in todo and not tracker.run_id_of(job.network):
                meta = torch.load(study.checkpoint(job), weights_only=True)["meta"]
                tracker.log_network(job, rows[job.network], meta["history"])
    failed = []
    done = 0
    # bases before the transfers that copy them; within each phase networks are independent
    for phase in ([j for j in todo if j.treatment == "base"],
                  [j for j in todo if j.treatment != "base"]):  # fmt: skip
        for job, result, error in execute(cfg, splits, study, phase):
            done += 1
            if error is not None:
                failed.append(f"{job.network}: {error}")
                log(f"[{done}/{len(todo)}] {job.network}: FAILED ({error})")
                continue
            row, history = result
            if tracker:
                tracker.log_network(job, row, history)
            rows[job.network] = row
            write_runs(runs_path, [rows[j.network] for j in everything if j.network in rows])
            log(f"[{done}/{len(todo)}] {job.network}: test {row['test_acc']:.4f} "
                f"train {row['train_acc']:.4f} ({row['seconds']:.0f}s)")  # fmt: skip
    sys.stdout.flush()
    if tracker:
        tracker.finish(failed=bool(failed))
    if failed:
        raise RuntimeError(
            f"{len(failed)} network(s) failed after {cfg.study.retries} retries (the others "
            "are saved; run again to retry):\n  " + "\n  ".join(failed)
        )
    mine = {j.network for j in jobs}
    return [r for r in read_runs(runs_path) if r["network"] in mine]
