"""Which layers are similar across tasks: linear CKA (Kornblith et al. 2019) between networks,
layer by layer, on the same test images.

For each of the first `beyond.blocks` random-split blocks: baseA against baseB at every layer,
and every fine-tuned network (AnB+, BnB+ at every cut) against the base it copied — how far
fine-tuning moved each layer (copied layers, up to n) and how alike a layer trained afresh on
top of copied ones is to the base's own (above n). Inference only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from transferability import data as data_mod
from transferability.config import Config
from transferability.networks import Job, Networks, base_job, sweep_blocks
from transferability.runner import block_key, blockwise, need_checkpoints
from transferability.splits import Split
from transferability.train import DeviceTask, machine

FINE_TUNED = ("AnB+", "BnB+")
# the version of the CKA rows, in each block's key (runner.blockwise): raise it with a change
# that changes them (here, in the probe images or the models), and finished blocks are computed
# again; a change that leaves the rows as they were keeps them
VERSION = 1
CKA_COLUMNS = ["split", "seed", "direction", "comparison", "n", "layer", "cka", "images"]


def gram(x) -> np.ndarray:
    """The centred Gram matrix (n × n, float64) of a representation (n examples × features)."""
    x = centred(x)
    return x @ x.T


def cka_from_grams(k: np.ndarray, m: np.ndarray) -> float:
    """Linear CKA from two centred Gram matrices: <K, M>_F / (‖K‖_F ‖M‖_F); nan when either is
    (numerically) zero, i.e. a representation constant over the examples."""
    denom = np.linalg.norm(k) * np.linalg.norm(m)
    return float(np.vdot(k, m) / denom) if denom > 0 else math.nan


def centred(x) -> np.ndarray:
    """Each feature minus its mean over the examples (float64); exactly zero for a feature
    that is constant up to rounding (relative 1e-12), so that a constant representation gives
    CKA nan rather than the ratio of two rounding errors."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    c = x - x.mean(axis=0, keepdims=True)
    c[:, np.abs(c).max(axis=0) <= 1e-12 * np.abs(x).max(axis=0)] = 0.0
    return c


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n examples
    (n × p and n × q), in float64: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) after centring each feature.
    1 for a representation and itself; invariant to orthogonal transforms and isotropic
    scaling of either; nan when either is constant."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same examples: {len(x)} and {len(y)} rows")
    if max(x.shape[1], y.shape[1]) > len(x):  # wide: the n × n form is cheaper
        return cka_from_grams(gram(x), gram(y))
    x, y = centred(x), centred(y)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denom) if denom > 0 else math.nan


def probe_images(cfg: Config, dataset: data_mod.Dataset) -> DeviceTask:
    """The same number of test images of each of the ten classes (`beyond.cka_images` in all),
    normalised as in training."""
    per_class = max(1, cfg.beyond.cka_images // len(dataset.classes))
    view = data_mod.task_view(dataset, dataset.classes, 1, per_class, 0)
    return DeviceTask.from_task(view, torch.device("cpu"))


@torch.no_grad()
def layer_grams(model, x: torch.Tensor, batch: int = 500) -> list[np.ndarray]:
    """The centred Gram matrix of every layer's output on `x` (eval mode: no dropout).

    Features are centred in float64 and multiplied in float32 (a few thousand examples by up to
    8,192 features: float64 would cost twice the time for no visible digit of CKA); the Gram
    matrix itself is kept in float64."""
    model.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in model.layers]
    for i in range(0, len(x), batch):
        h = x[i : i + batch]
        for k, layer in enumerate(model.layers):
            h = layer(h)
            outs[k].append(h.reshape(len(h), -1).clone())
    grams = []
    for parts in outs:
        f = torch.from_numpy(centred(torch.cat(parts).numpy())).float()
        grams.append((f @ f.T).double().numpy())
    return grams


def layer_similarity(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    log: Callable = print,
    md5s: dict[str, str] | None = None,
    out: Path | None = None,
    only: Collection[str] | None = None,
) -> pd.DataFrame:
    """One row per (block, direction, comparison, n, layer) with its CKA (columns CKA_COLUMNS,
    then runner.BLOCK_COLUMNS), written to `out` block by block.

    Every checkpoint must be the network the study now configures (`Networks.verify`, which also
    refuses a damaged one) and, where `md5s` (network → md5, from its results row) names it,
    have those bytes. A block is kept across sessions and machines while its settings, VERSION
    and its networks' fingerprints and recorded md5s are unchanged (`runner.blockwise`, as the
    diagnostics); `only` computes just the named blocks now."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    networks = Networks(cfg, splits, dataset)
    kinds = {s.name: s.kind for s in splits}

    def jobs_of(split: str, seed: int) -> list[Job]:
        bases = [base_job(split, kinds[split], seed, t) for t in ("A", "B")]
        return bases + [
            Job(split, kinds[split], seed, direction, *direction.split("->"), treatment, n)
            for direction in cfg.study.directions
            for n in cfg.cuts
            for treatment in FINE_TUNED
        ]

    def key(split: str, seed: int) -> str:
        jobs = jobs_of(split, seed)
        return block_key(md5s, networks, jobs, version=VERSION, images=cfg.beyond.cka_images)

    def grams_of(job: Job, x: torch.Tensor) -> list[np.ndarray]:
        return layer_grams(networks.load(job, (md5s or {}).get(job.network, "")), x)

    def compute(todo):
        if not todo:
            return
        need_checkpoints(networks, [j for b in todo for j in jobs_of(*b)], md5s)
        probe = probe_images(cfg, dataset)
        x = probe.normalise(probe.test_x)
        for split, seed in todo:
            jobs = jobs_of(split, seed)
            base = {j.target_task: grams_of(j, x) for j in jobs[:2]}  # baseA, baseB
            rows = [
                (split, seed, "", "baseA vs baseB", 0, layer, cka_from_grams(ka, kb), len(x))
                for layer, (ka, kb) in enumerate(zip(base["A"], base["B"], strict=True), 1)
            ]
            for job in jobs[2:]:  # one at a time: a Gram matrix per layer is images² floats
                src = base[job.source.target_task]
                comp = f"{job.treatment} vs its source"
                for layer, (k, ks) in enumerate(zip(grams_of(job, x), src, strict=True), 1):
                    c = cka_from_grams(k, ks)
                    rows.append((split, seed, job.direction, comp, job.n, layer, c, len(x)))
            log(f"{split}/s{seed}: CKA of {len(jobs)} networks")
            yield (split, seed), pd.DataFrame(rows, columns=CKA_COLUMNS)

    keys = {b: key(*b) for b in sweep_blocks(cfg, splits)}
    stamp = {"machine": machine(), "precision": "fp32"}  # layer_grams: float32, no autocast
    return blockwise(out, keys, compute, CKA_COLUMNS, stamp, only, log)
