"""What a network of the study is (`Job`, `plan`) and how one is built, trained, saved and checked
(`Networks`).

Naming follows the paper. For a direction S->T (source task S, target task T) and a cut n:

- ``baseT``: trained from scratch on T (n = 0);
- ``TnT`` (treatment BnB): first n layers copied from baseT and frozen; ``TnT+`` (BnB+) fine-tuned;
- ``SnT`` (AnB): first n layers copied from baseS and frozen; ``SnT+`` (AnB+) fine-tuned;
- ``RnT`` (RnB): first n layers left at their random initialisation and frozen.

What is shared with what (common random numbers):

- a *block* is one (split, seed): both bases and both directions. Blocks are the independent
  replicates; nothing random is shared between two blocks.
- every network of one (block, target task) sees the same batch order, augmentation and dropout
  draws, so that paired gaps between treatments carry less noise;
- the transfer networks of one (block, target task) share one fresh initial draw for the layers
  they do not copy — a draw that differs from the base's own initial weights, as the original
  drew its new layers afresh; RnB's frozen random layers come from that same draw.

A network's identity is its fingerprint (a hash of every setting that determines it, including
its source base's fingerprint) together with the md5 of the base checkpoint it actually copied
(`source_md5`), both stored in its checkpoint and its results row.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from transferability import data as data_mod
from transferability.config import NETWORK_SETTINGS, Config, settings_of
from transferability.io import md5_file
from transferability.models import (
    NetConfig,
    TransferNet,
    arch_digest,
    build,
    copy_layers,
    damaged_member,
    load_checkpoint,
    save_checkpoint,
)
from transferability.splits import Split
from transferability.train import (
    DeviceTask,
    TrainResult,
    machine,
    partial_key,
    resolve_device,
    resolve_precision,
    train,
)

COPY_FROM_TARGET = {"BnB", "BnB+"}
COPY_FROM_SOURCE = {"AnB", "AnB+"}
FROZEN = {"BnB", "AnB", "RnB"}

COLUMNS = [
    "network",
    "split",
    "split_kind",
    "direction",
    "source_task",
    "target_task",
    "treatment",
    "n",
    "seed",
    "arch",
    "width",
    "num_classes",
    "train_images",
    "val_images",
    "test_images",
    "epochs",
    "test_acc",
    "val_acc",
    "train_acc",
    "train_loss",
    "seconds",
    "checkpoint",
    "checkpoint_md5",
    "source_network",
    "source_md5",
    "fingerprint",
    "machine",
    "precision",  # fp32 | bf16: what it trained in (a table from before the column: fp32)
]


class CheckpointMismatch(ValueError):
    """A checkpoint on disk is not the network it should be (stale, swapped or damaged)."""


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
    # target images per class when not the study's own (the target-size sweep): such a
    # network trains on that many, and its BnB/BnB+ copy the base of the same size; AnB and
    # AnB+ always copy the study's source base, trained on its full task
    per_class: int | None = None

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
        size = f"size{self.per_class}/" if self.per_class else ""
        return f"{self.split}/s{self.seed}/{size}{self.name}"

    @property
    def identity(self) -> dict:
        """The fields that name this network (`per_class` only when set, so that the study's
        own networks keep the fingerprints they were trained with)."""
        d = asdict(self)
        if d["per_class"] is None:
            del d["per_class"]
        return d

    @property
    def source(self) -> Job | None:
        """The base network whose layers this one copies."""
        if self.treatment in COPY_FROM_TARGET:
            return base_job(
                self.split, self.split_kind, self.seed, self.target_task, self.per_class
            )
        if self.treatment in COPY_FROM_SOURCE:
            return base_job(self.split, self.split_kind, self.seed, self.source_task)
        return None


def base_job(split: str, kind: str, seed: int, task: str, per_class: int | None = None) -> Job:
    return Job(split, kind, seed, "", "", task, "base", 0, per_class)


def plan(cfg: Config, splits: list[Split]) -> list[Job]:
    """Every network of the study: all bases first, then the transfers, in a stable order."""
    bases, transfers = [], []
    for split in splits:
        seeds = cfg.study.seeds
        if split.kind == "dissimilar" and cfg.study.dissimilar_seeds is not None:
            seeds = cfg.study.dissimilar_seeds
        for seed in seeds:
            bases += [base_job(split.name, split.kind, seed, t) for t in ("A", "B")]
            for direction in cfg.study.directions:
                s, t = direction.split("->")
                for n in cfg.cuts:
                    for treatment in cfg.study.treatments:
                        transfers.append(
                            Job(split.name, split.kind, seed, direction, s, t, treatment, n)
                        )
    return bases + transfers


def sweep_blocks(cfg: Config, splits: list[Split]) -> list[tuple[str, int]]:
    """The (split, seed) blocks that the work beyond the paper reads: the first
    `beyond.blocks` random-split blocks of the study, in the study's order."""
    blocks = [(s.name, seed) for s in splits if s.kind == "random" for seed in cfg.study.seeds]
    return blocks[: cfg.beyond.blocks]


def plan_datasize(cfg: Config, splits: list[Split]) -> list[Job]:
    """The target-size sweep: at each size, baseB, then BnB+ and AnB+ at each sweep cut, both
    directions of each block (baseA and baseB of every size, as each is a target)."""
    kinds = {s.name: s.kind for s in splits}
    bases, transfers = [], []
    for split, seed in sweep_blocks(cfg, splits):
        for size in cfg.beyond.datasize_per_class:
            bases += [base_job(split, kinds[split], seed, t, size) for t in ("A", "B")]
            for direction in cfg.study.directions:
                s, t = direction.split("->")
                for n in cfg.beyond.datasize_cuts:
                    for treatment in ("BnB+", "AnB+"):
                        transfers.append(
                            Job(split, kinds[split], seed, direction, s, t, treatment, n, size)
                        )
    return bases + transfers


@dataclass
class Trained:
    """A network just trained, before its checkpoint is written."""

    job: Job
    model: TransferNet
    result: TrainResult
    source_md5: str  # the md5 of the base checkpoint it copied ("" for a base)
    data: DeviceTask


class Networks:
    """Runs the jobs of a study against one prepared dataset, skipping finished networks."""

    def __init__(self, cfg: Config, splits: list[Split], dataset: data_mod.Dataset):
        self.cfg = cfg
        self.splits = {s.name: s for s in splits}
        self.dataset = dataset
        self.device = resolve_device(cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self._tasks: dict[tuple[str, str], DeviceTask] = {}

    # ------------------------------------------------------------------ identity

    def fingerprint(self, job: Job) -> str:
        """A hash of everything that determines a network; a changed setting retrains it: the
        settings config.NETWORK_SETTINGS names (the precision it trains in counts only when it is
        not fp32), the data set, the classes, the job and its source's fingerprint. A custom
        architecture (`package.module:function`) adds the hash of its module's source: an
        edited network is a new one; the built-in ones add nothing and keep theirs."""
        settings = settings_of(self.cfg, NETWORK_SETTINGS, self.precision)
        images = settings["data"]
        split = self.splits[job.split]
        ident = {  # the shape the committed fingerprints were hashed in
            "job": job.identity,
            "classes": [list(split.A), list(split.B)],
            "data": [
                self.dataset.source_hash,
                self.dataset.image_size,
                images["train_per_class"],
                images["test_per_class"],
                images["val_per_class"],
            ],
            "model": settings["model"],
            "train": settings["train"],
            "source": self.fingerprint(job.source) if job.source else None,
        }
        if digest := arch_digest(self.cfg.model.arch):
            ident["arch_source"] = digest
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def checkpoint(self, job: Job) -> Path:
        kind = "bases" if job.treatment == "base" else "transfers"  # DVC outputs
        if job.per_class:
            kind = f"datasize/size{job.per_class}"
        return Path(self.cfg.study.models_dir, kind, job.split, f"s{job.seed}", f"{job.name}.pt")

    @property
    def partial_dir(self) -> Path:
        """Where unfinished states are kept: `.partial` in the checkpoint folder."""
        return Path(self.cfg.study.models_dir, ".partial")

    def partial(self, job: Job) -> Path:
        """Where `train` keeps `job`'s unfinished state (`train.train`'s `partial`): beside the
        checkpoint folders, not in them (they are DVC outputs), under `partial_dir`."""
        rel = self.checkpoint(job).relative_to(self.cfg.study.models_dir)
        return Path(self.partial_dir, rel)

    def net_config(self, num_classes: int) -> NetConfig:
        m = self.cfg.model
        return NetConfig(m.arch, num_classes, m.width, self.dataset.image_size, m.dropout, m.init)

    # ------------------------------------------------------------------ running

    def task(self, split: str, task: str, per_class: int | None = None) -> DeviceTask:
        key = (split, task, per_class)
        if key not in self._tasks:
            self._tasks.clear()  # keep one task on the device at a time
            view = data_mod.task_view(
                self.dataset,
                self.splits[split].classes(task),
                per_class or self.cfg.data.train_per_class,
                self.cfg.data.test_per_class,
                self.cfg.data.val_per_class,
            )
            self._tasks[key] = DeviceTask.from_task(view, self.device)
        return self._tasks[key]

    def verify(self, job: Job, path: Path | None = None) -> dict:
        """The meta of `job`'s checkpoint, if it is that network; else `CheckpointMismatch`."""
        path = path or self.checkpoint(job)
        try:
            meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
            bad = damaged_member(path)
        except FileNotFoundError:
            raise
        except Exception as e:  # torch raises several types for a damaged file
            raise CheckpointMismatch(f"{path} is damaged ({type(e).__name__})") from None
        if bad:
            raise CheckpointMismatch(f"{path} is damaged (the bytes of {bad} fail their CRC)")
        expected = self.fingerprint(job)
        if meta.get("fingerprint") != expected or meta.get("network") != job.network:
            raise CheckpointMismatch(
                f"{path} holds {meta.get('network')} with fingerprint {meta.get('fingerprint')}, "
                f"not {job.network} as now configured ({expected}): it is stale or swapped"
            )
        return meta

    def stale(
        self, job: Job, row: dict | None, source_row: dict | None = None, trust_rows=False
    ) -> str:
        """Why the network of results row `row` is not `job` as now configured ("" when it is):
        no row, other settings, a checkpoint missing (fine with `trust_rows`), copied from
        another base than the one of `source_row`, or a checkpoint that is not the row's
        (damaged, replaced, stale) or whose accuracies the row does not record (edited)."""
        if row is None:
            return "no row"
        if row.get("fingerprint") != self.fingerprint(job):
            return "its settings changed"
        path = self.checkpoint(job)
        if not path.is_file():
            return "" if trust_rows else f"checkpoint {path} missing"
        if source_row is not None and row.get("source_md5") != source_row.get("checkpoint_md5"):
            return f"it copied another {job.source.network} than the one in the table"
        if md5_file(path) != row.get("checkpoint_md5"):
            return f"checkpoint {path} is not the one its row records (damaged or replaced)"
        try:
            meta = self.verify(job, path)
        except CheckpointMismatch as e:
            return str(e)
        final = (meta.get("history") or [{}])[-1]
        for k in ("test_acc", "val_acc", "train_acc", "train_loss"):
            if k in final and not _same(row.get(k, ""), final[k]):
                return f"its row's {k} {row.get(k)} is not its checkpoint's (the table was edited)"
        return ""

    def load(self, job: Job, md5: str = "") -> torch.nn.Module:
        """The trained network of `job`, read for inference: its checkpoint must be that network
        as now configured (`verify`, which also refuses a damaged one) and, when `md5` is given
        (the md5 its results row records), have those bytes."""
        path = self.checkpoint(job)
        if not path.is_file():
            raise FileNotFoundError(f"{job.network}: checkpoint {path} not found; train it first")
        self.verify(job, path)
        if md5 and md5_file(path) != md5:
            raise CheckpointMismatch(
                f"{job.network}: checkpoint {path} is not the one its results row records "
                "(damaged or replaced): retrain it (transferability study / dvc repro)"
            )
        model, _ = load_checkpoint(path)
        return model

    def init_seed(self, job: Job) -> int:
        """The seed of `job`'s initial draw (`models.build`): a base's own, or the fresh draw
        that the transfer networks of its (block, target task) share."""
        role = "init" if job.treatment == "base" else "init-transfer"
        return derive_seed(role, job.split, job.seed, job.target_task)

    def build(self, job: Job, base_md5: str = "") -> tuple[torch.nn.Module, str]:
        """The network of `job` before training, and the md5 of the base checkpoint it copied.

        A base starts from its own draw; the transfer networks of one (block, target task) share
        a fresh draw for everything they do not copy. The source checkpoint must be the network
        `job.source` as now configured (`verify`) and, when `base_md5` is given (the md5 its
        row records), have those bytes, else nothing is copied.
        """
        split = self.splits[job.split]
        classes = split.classes(job.target_task)
        model = build(self.net_config(len(classes)), self.init_seed(job))
        source_md5 = ""
        if job.source is not None:
            path = self.checkpoint(job.source)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{job.network} needs the base checkpoint {path}: train the bases first"
                )
            try:
                self.verify(job.source, path)
            except CheckpointMismatch as e:
                raise CheckpointMismatch(
                    f"{job.network} cannot copy from it: {e}; run `transferability train-bases` "
                    "to retrain the base"
                ) from None
            source_md5 = md5_file(path)
            if base_md5 and source_md5 != base_md5:
                raise CheckpointMismatch(
                    f"{job.network} cannot copy {path}: its md5 is {source_md5}, not {base_md5} "
                    f"as the row of {job.source.network} records (damaged or replaced since); run "
                    "`transferability train-bases` to retrain the base"
                )
            src, _ = load_checkpoint(path)
            copy_layers(model, src, job.n, src_name=str(path))
        if job.treatment in FROZEN:
            model.freeze(job.n)
        return model, source_md5

    def train(self, job: Job, base_md5: str = "") -> Trained:
        """Build `job`'s network (`build`) and train it on its target task; nothing is written."""
        model, source_md5 = self.build(job, base_md5)
        data = self.task(job.split, job.target_task, job.per_class)
        result = train(
            model,
            data,
            self.cfg.train,
            seed=derive_seed("data", job.split, job.seed, job.target_task),
            desc=job.network,
            partial=self.partial(job),
            key=partial_key(
                job.network, self.fingerprint(job), source_md5, self.precision, device=self.device
            ),
        )
        return Trained(job, model, result, source_md5, data)

    def save(self, trained: Trained) -> Path:
        """Write the checkpoint of a trained network atomically, with what `verify` reads."""
        job, result = trained.job, trained.result
        path = self.checkpoint(job)
        meta = {
            "network": job.network,
            "split": job.split,
            "treatment": job.treatment,
            "n": job.n,
            "seed": job.seed,
            "fingerprint": self.fingerprint(job),
            "precision": result.precision,
            "source_md5": trained.source_md5,
            "classes": self.splits[job.split].classes(job.target_task),
            "history": result.history,
        }
        save_checkpoint(path, trained.model, meta)
        self.partial(job).unlink(missing_ok=True)  # saved: its unfinished state is done with
        return path

    def run(self, job: Job, base_md5: str = "") -> tuple[dict, list[dict]]:
        """Train one network, write its checkpoint atomically; return its row and history."""
        trained = self.train(job, base_md5)
        path = self.save(trained)
        return self.row(trained, path), trained.result.history

    def row(self, trained: Trained, path: Path) -> dict:
        """The results row of a trained network whose checkpoint is `path`."""
        job, result, data = trained.job, trained.result, trained.data
        return {
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
            "num_classes": trained.model.cfg.num_classes,
            "train_images": len(data.train_x),
            "val_images": len(data.val_x),
            "test_images": len(data.test_x),
            "epochs": self.cfg.train.epochs,
            "test_acc": round(result.test_acc, 6),
            "val_acc": round(result.val_acc, 6),
            "train_acc": round(result.train_acc, 6),
            "train_loss": round(result.train_loss, 6),
            "seconds": round(result.seconds, 2),
            "checkpoint": path.as_posix(),
            "checkpoint_md5": md5_file(path),
            "source_network": job.source.network if job.source else "",
            "source_md5": trained.source_md5,
            "fingerprint": self.fingerprint(job),
            "machine": machine(),
            "precision": result.precision,
        }


def _same(text: str, value: float) -> bool:
    """Whether a row's number (text) is the value, as the row rounds it."""
    try:
        x = float(text)
    except ValueError:
        return False
    return x == round(value, 6) or (math.isnan(x) and math.isnan(value))
