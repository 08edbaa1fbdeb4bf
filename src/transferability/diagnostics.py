"""Beyond the paper, part 2: diagnostics that pull specificity apart from co-adaptation.

AnB falls below BnB for two reasons mixed together: task A's features do not suit task B, and
upper layers retrained from scratch on frozen copied ones cannot re-find a co-adapted solution.
Four diagnostics, each a function of trained networks and a task's images (`DeviceTask`) that
returns rows:

- `stitching_rows` (Lenc & Vedaldi 2015; Bansal, Nakkiran & Barak 2021): baseA's first n layers,
  frozen → an affine stitch (a 1×1 convolution on feature maps, a linear map on vectors; the
  identity at the start) → baseB's layers above n, frozen. Only the stitch trains, on B's
  training images. The penalty baseB − stitched is what A's features lack for B's own upper
  layers, with B's co-adaptation kept;
- `reinit_rows` (Zhang, Bengio & Singer 2019): one layer of a trained base reset to its initial
  weights (the base's own draw, rebuilt from its seed) or to a fresh draw; a large drop marks the
  layer critical, a small one robust;
- `interpolation_rows` (Neyshabur, Sedghi & Zhang 2020): accuracy along the straight line
  between two networks' weights (the nets have no batch norm: plain interpolation). The
  shortfall below the line between the endpoints' accuracies; its maximum is the barrier.
  AnB+ and BnB+ share the fresh draw of the layers above n and the batch order (networks.py), so
  a barrier between them comes from where their copied layers started;
- `transfusion_rows` (Raghu et al. 2019): AnB+ fine-tuned from random first n layers drawn with
  the mean and SD of each output channel of baseA's: what the weights' scale alone gives.

`network_diagnostics` runs them on the study's first `beyond.blocks` random blocks (every
checkpoint checked as for CKA) and returns the stage's table (COLUMNS). Accuracies are
fractions on the target task's test images (`accuracy`) and validation images
(`val_accuracy`); `value` = `reference` − `accuracy`: the stitching penalty, the drop of a
reset layer, the shortfall below the line, AnB+'s edge over the scale-matched start.
"""

from __future__ import annotations

import copy
import hashlib
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from transferability import data as data_mod
from transferability.config import HOW_IT_RUNS, BeyondConfig, Config, TrainConfig
from transferability.executors import worker_threads
from transferability.models import TransferNet, build
from transferability.networks import Job, Networks, base_job, derive_seed, sweep_blocks
from transferability.runner import block_key, blockwise, need_checkpoints
from transferability.splits import Split
from transferability.train import (
    DeviceTask,
    autocast,
    batch_crop_flip,
    evaluate,
    machine,
    partial_key,
    train,
)

DIAGNOSTICS = ("stitching", "reinit", "interpolation", "transfusion")
# the version of the diagnostics' rows, in each block's key (runner.blockwise): raise it with a
# change here or in what they call (training, the networks) that changes them, and the finished
# blocks are computed again; a change that leaves the rows as they were keeps them
VERSION = 1
COLUMNS = [
    "split",
    "seed",
    "direction",  # "" for a base's own diagnostic (reinit)
    "task",  # the task scored on: the target (the base's own for reinit)
    "n",  # the cut (reinit: the layer reset)
    "diagnostic",
    "variant",  # stitching: identity | trained; reinit: init | fresh; interpolation: to BnB+ |
    # to source; transfusion: scale
    "alpha",  # interpolation: the fraction of the way from AnB+ to the other end
    "accuracy",
    "val_accuracy",
    "reference",
    "value",
    "seconds",
]


def scores(model: nn.Module, data: DeviceTask, bs: int, precision: str) -> tuple[float, float]:
    """(test, validation) accuracy; validation nan without validation images."""
    test = evaluate(model, data, data.test_x, data.test_y, bs, precision)
    if not len(data.val_x):
        return test, math.nan
    return test, evaluate(model, data, data.val_x, data.val_y, bs, precision)


def _row(n, variant, acc: tuple[float, float], reference: float, seconds=0.0, alpha=math.nan):
    return {
        "n": n,
        "variant": variant,
        "alpha": alpha,
        "accuracy": acc[0],
        "val_accuracy": acc[1],
        "reference": reference,
        "value": reference - acc[0],
        "seconds": round(seconds, 3),
    }


# ---------------------------------------------------------------------- stitching


def identity_stitch(shape: torch.Size) -> nn.Module:
    """An affine map of a layer's output onto itself, the identity at the start: a 1×1
    convolution on feature maps (N, C, H, W), a linear map on vectors (N, D)."""
    width = shape[1]
    stitch = nn.Conv2d(width, width, 1) if len(shape) == 4 else nn.Linear(width, width)
    with torch.no_grad():
        stitch.weight.zero_()
        stitch.weight.view(width, width).copy_(torch.eye(width))
        stitch.bias.zero_()
    return stitch


class Stitched(nn.Module):
    """`bottom`'s first n layers → an affine stitch → `top`'s layers above n; only the stitch
    has gradients (both networks are copied, so the originals stay as they were)."""

    def __init__(self, bottom: TransferNet, top: TransferNet, n: int):
        super().__init__()
        a, b = bottom.cfg, top.cfg
        if (a.arch, a.width, a.image_size) != (b.arch, b.width, b.image_size):
            raise ValueError(f"cannot stitch {a.arch} (width {a.width}) into {b.arch} ({b.width})")
        if not 1 <= n < top.num_layers:
            raise ValueError(f"cut n={n} out of range 1..{top.num_layers - 1}")
        self.n = n
        self.bottom = copy.deepcopy(nn.ModuleList(bottom.layers[:n])).requires_grad_(False)
        self.top = copy.deepcopy(nn.ModuleList(top.layers[n:])).requires_grad_(False)
        device = next(bottom.parameters()).device
        with torch.no_grad():
            probe = torch.zeros(1, 3, a.image_size, a.image_size, device=device)
            shape = self.below(self.bottom.eval(), probe).shape
        self.stitch = identity_stitch(shape).to(device)

    @staticmethod
    def below(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # nothing below the stitch learns: no autograd graph there
            x = self.below(self.bottom, x)
        return self.below(self.top, self.stitch(x))


def train_stitch(
    model: Stitched,
    data: DeviceTask,
    recipe: TrainConfig,
    epochs: int,
    lr: float,
    seed: int,
    precision: str = "fp32",
) -> None:
    """Train the stitch alone with Adam on the task's training images, in the recipe's batches
    and augmentation; the frozen networks stay in eval mode (no dropout)."""
    model.eval()
    opt = torch.optim.Adam(model.stitch.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.train_x)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(data.train_x.device)
        for i in range(0, n, recipe.batch_size):
            idx = perm[i : i + recipe.batch_size]
            xb = data.train_x[idx]
            if recipe.augment:
                xb = batch_crop_flip(xb, recipe.crop_padding, gen, recipe.crop_fill)
            with autocast(xb.device, precision):
                loss = F.cross_entropy(model(data.normalise(xb)), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def stitching_rows(
    bottom: TransferNet,
    top: TransferNet,
    cuts: Iterable[int],
    data: DeviceTask,
    recipe: TrainConfig,
    beyond: BeyondConfig,
    seed: int,
    precision: str = "fp32",
) -> pd.DataFrame:
    """At each cut: the stitched network's accuracy at the identity stitch and after training
    it (`beyond.stitch_epochs` at `beyond.stitch_lr`); reference: `top`'s own accuracy."""
    bs = recipe.eval_batch_size
    reference = scores(top, data, bs, precision)[0]
    rows = []
    for n in cuts:
        start = time.perf_counter()
        model = Stitched(bottom, top, n)
        rows.append(_row(n, "identity", scores(model, data, bs, precision), reference))
        train_stitch(
            model, data, recipe, beyond.stitch_epochs, beyond.stitch_lr, seed + n, precision
        )
        acc = scores(model, data, bs, precision)
        rows.append(_row(n, "trained", acc, reference, time.perf_counter() - start))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- re-initialisation


def reinitialised(model: TransferNet, layer: int, source: TransferNet) -> TransferNet:
    """A copy of `model` whose layer `layer` (1-based, as the paper counts) is `source`'s."""
    out = copy.deepcopy(model)
    out.layers[layer - 1].load_state_dict(source.layers[layer - 1].state_dict())
    return out


def reinit_rows(
    model: TransferNet,
    initial: TransferNet,
    fresh: TransferNet,
    data: DeviceTask,
    bs: int,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Each layer reset, one at a time, to `initial`'s weights (the network before training)
    and to `fresh`'s (another draw); reference: the trained network's accuracy."""
    reference = scores(model, data, bs, precision)[0]
    rows = []
    for layer in range(1, model.num_layers + 1):
        for variant, source in (("init", initial), ("fresh", fresh)):
            start = time.perf_counter()
            acc = scores(reinitialised(model, layer, source), data, bs, precision)
            rows.append(_row(layer, variant, acc, reference, time.perf_counter() - start))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- interpolation


def interpolated(
    net0: TransferNet, net1: TransferNet, alpha: float, layers: Iterable[int] | None = None
) -> TransferNet:
    """`net0` with the weights of `layers` (1-based; all by default) moved the fraction `alpha`
    of the way to `net1`'s: θ0 + α(θ1 − θ0) (torch.lerp: exactly θ0 at α = 0, θ1 at α = 1, and
    θ0 all along when θ1 = θ0); the other layers stay `net0`'s."""
    out = copy.deepcopy(net0)
    with torch.no_grad():
        for k in layers if layers is not None else range(1, net0.num_layers + 1):
            ends = net1.layers[k - 1].state_dict()
            for name, p in out.layers[k - 1].state_dict().items():
                p.copy_(torch.lerp(p, ends[name].to(p.device), alpha))
    return out


def interpolation_rows(
    net0: TransferNet,
    net1: TransferNet,
    data: DeviceTask,
    points: int,
    layers: Iterable[int] | None = None,
    bs: int = 1000,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Accuracy at `points` evenly spaced α from 0 (net0) to 1 (net1); reference: the straight
    line between the endpoints' accuracies, (1 − α)·acc(0) + α·acc(1)."""
    layers = list(layers) if layers is not None else None
    alphas = np.linspace(0.0, 1.0, points)
    accs, secs = [], []
    for a in alphas:
        start = time.perf_counter()
        accs.append(scores(interpolated(net0, net1, float(a), layers), data, bs, precision))
        secs.append(time.perf_counter() - start)
    lo, hi = accs[0][0], accs[-1][0]
    return pd.DataFrame(
        [
            _row(0, "", acc, (1 - a) * lo + a * hi, s, alpha=float(a))
            for a, acc, s in zip(alphas, accs, secs, strict=True)
        ]
    )


def barrier(rows: pd.DataFrame) -> float:
    """The loss barrier of one path: the largest shortfall below the line between its ends."""
    return float(rows.value.max())


# ---------------------------------------------------------------------- weight scale alone


@torch.no_grad()
def scale_matched(layer: nn.Module, gen: torch.Generator) -> None:
    """Redraw `layer`'s weights at random in place, each output channel from a normal with
    that channel's own mean and SD; biases from the mean and SD of the layer's biases."""
    for m in layer.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w = m.weight.reshape(len(m.weight), -1)
            draw = torch.randn(w.shape, generator=gen).to(w.device)
            draw = draw * w.std(1, keepdim=True) + w.mean(1, keepdim=True)
            m.weight.copy_(draw.view_as(m.weight))
            b = m.bias
            spread = b.std() if len(b) > 1 else torch.zeros((), device=b.device)
            m.bias.copy_(torch.randn(b.shape, generator=gen).to(b.device) * spread + b.mean())


def transfusion_rows(
    start: TransferNet,
    n: int,
    reference: TransferNet,
    data: DeviceTask,
    recipe: TrainConfig,
    seed: int,
    draw_seed: int,
    resume: tuple[Path, str] | None = None,
) -> pd.DataFrame:
    """`start` (AnB+ before training: baseA's first n layers over the shared fresh draw) with
    its first n layers redrawn by `scale_matched`, then fine-tuned as AnB+ is (`recipe`, data
    seed `seed`; `resume`: where its unfinished state is kept and under which key, as `train`'s
    `partial` and `key`); reference: AnB+'s accuracy (`reference`, the trained network)."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(draw_seed)
    for layer in start.layers[:n]:
        scale_matched(layer, gen)
    partial, key = resume or (None, "")
    result = train(
        start, data, recipe, seed=seed, desc=f"transfusion n={n}", partial=partial, key=key
    )
    bs = recipe.eval_batch_size
    ref = evaluate(reference, data, data.test_x, data.test_y, bs, result.precision)
    acc = (result.test_acc, result.val_acc)
    return pd.DataFrame([_row(n, "scale", acc, ref, time.perf_counter() - t0)])


# ---------------------------------------------------------------------- the study's blocks


def diagnostic_cuts(cfg: Config) -> list[int]:
    """`beyond.diagnostics_cuts`, or the study's cuts; every one must be a cut of the study
    (interpolation and transfusion read its AnB+ and BnB+ networks)."""
    cuts = cfg.beyond.diagnostics_cuts or cfg.cuts
    bad = sorted(set(cuts) - set(cfg.cuts))
    if bad:
        raise ValueError(
            f"beyond.diagnostics_cuts: {bad} are not cuts of the study ({cfg.cuts}, study.cuts)"
        )
    return list(cuts)


def network_diagnostics(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    log: Callable = print,
    md5s: dict[str, str] | None = None,
    out: Path | None = None,
    only: Collection[str] | None = None,
) -> pd.DataFrame:
    """The diagnostics of `beyond.diagnostics` on the first `beyond.blocks` random blocks, at
    `diagnostic_cuts`: one table (COLUMNS, then runner.BLOCK_COLUMNS), written to `out` block by
    block. Every checkpoint read must be the network the study now configures (`Networks.load`)
    and, where `md5s` (network → md5, from its results row) names it, have those bytes.

    A block is kept across sessions and machines (`runner.blockwise`): its rows in `out` stand
    while everything that decides them (the settings, VERSION, the precision, and the
    fingerprint and recorded md5 of every network it reads) is unchanged,
    even where the checkpoints are gone; `only` computes just the named blocks now. A
    transfusion network saves its state as training does."""
    which = set(cfg.beyond.diagnostics)
    if not which:  # a study without diagnostics (the reference's): no checkpoint is read
        return blockwise(out, {}, lambda todo: [], COLUMNS, {}, only, log)
    # as the study's networks train: study.workers blocks at once, `worker_threads` each
    threads = worker_threads(cfg)
    torch.set_num_threads(threads)
    networks = Networks(cfg, splits, dataset)
    keys = {b: _block_key(cfg, networks, *b, md5s) for b in sweep_blocks(cfg, splits)}

    def compute(todo):
        need_checkpoints(networks, [j for b in todo for j in _block_jobs(cfg, networks, *b)], md5s)
        states = networks.partial_dir / "diagnostics"  # the transfusions' saved states
        for (split, seed), rows, seconds in _compute(
            cfg, splits, networks, todo, keys, md5s, threads
        ):
            for state in states.glob(f"{split}-s{seed}-*-scale.pt"):
                state.unlink()
            log(f"{split}/s{seed}: {', '.join(sorted(which))} ({seconds:.0f}s)")
            yield (split, seed), rows

    stamp = {"machine": machine(), "precision": networks.precision}
    return blockwise(out, keys, compute, COLUMNS, stamp, only, log)


def _block_key(
    cfg: Config, networks: Networks, split: str, seed: int, md5s: dict[str, str] | None
) -> str:
    """Everything that decides a block's diagnostics, as text (`network_diagnostics`): not where
    they ran, which each row records (machine), nor the checkpoints on disk, which the rows'
    md5s stand for (every one read is checked against them)."""
    b = cfg.beyond
    return block_key(
        md5s,
        networks,
        _block_jobs(cfg, networks, split, seed),
        version=VERSION,
        diagnostics=b.diagnostics,
        settings=[b.stitch_epochs, b.stitch_lr, b.interpolation_points],
        cuts=diagnostic_cuts(cfg),
        directions=cfg.study.directions,
        train=cfg.train.model_dump(exclude=set(_HOW_IT_RUNS)),
        precision=networks.precision,
    )


def _compute(cfg, splits, networks, todo, keys, md5s, threads):
    """Yield (block, rows, seconds) for every block of `todo`: here, one after the other, or in
    study.workers local processes (as the study's networks train) when there are several."""
    workers = min(cfg.study.workers, len(todo))
    if workers < 2 or cfg.study.executor != "local":
        for split, seed in todo:
            t0 = time.perf_counter()
            rows = _block_diagnostics(cfg, networks, split, seed, keys[split, seed], md5s)
            yield (split, seed), rows, time.perf_counter() - t0
        return
    from transferability.executors import _init_local_worker, _payload

    ctx = mp.get_context("spawn")  # a clean interpreter, as the study's workers
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_local_worker, initargs=(None,)
    ) as pool:
        running = {
            pool.submit(
                block_job, *_payload(cfg, splits), b, keys[b], md5s or {}, threads, CODE_DIGEST
            ): b
            for b in todo
        }
        for fut in as_completed(running):
            rows, seconds = fut.result()
            yield running[fut], rows, seconds


def block_job(cfg_json, splits_json, root, block, key, md5s, threads, code):
    """One block's diagnostics in a worker process (`_compute`): its rows and seconds."""
    from transferability.executors import worker_networks

    if code != CODE_DIGEST:  # the code changed on disk since the stage began
        raise RuntimeError("the diagnostics' code changed while the stage ran: run it again")
    torch.set_num_threads(threads)
    networks = worker_networks(cfg_json, splits_json, root)
    t0 = time.perf_counter()
    rows = _block_diagnostics(networks.cfg, networks, *block, key, md5s)
    return rows, time.perf_counter() - t0


_HOW_IT_RUNS = [k.partition(".")[2] for k in HOW_IT_RUNS if k.startswith("train.")]


def _code_digest() -> str:
    """The hash of the modules that decide a block's rows, as this process imported them (this
    one, training, networks, models, data, splits, config): a worker whose code differs from
    the stage's, and a transfusion's saved state from other code, are refused."""
    from transferability import config, data, models, networks, splits
    from transferability import train as train_mod

    modules = (config, data, models, networks, splits, train_mod)
    text = b"".join(Path(m.__file__).read_bytes() for m in modules)
    return hashlib.sha256(Path(__file__).read_bytes() + text).hexdigest()[:16]


def _block_jobs(cfg: Config, networks: Networks, split: str, seed: int) -> list[Job]:
    """The networks whose checkpoints the block's diagnostics read."""
    kind = networks.splits[split].kind
    jobs = [base_job(split, kind, seed, t) for t in ("A", "B")]
    if set(cfg.beyond.diagnostics) & {"interpolation", "transfusion"}:
        for direction in cfg.study.directions:
            s, t = direction.split("->")
            for n in diagnostic_cuts(cfg):
                jobs.append(Job(split, kind, seed, direction, s, t, "AnB+", n))
                if "interpolation" in cfg.beyond.diagnostics:
                    jobs.append(Job(split, kind, seed, direction, s, t, "BnB+", n))
    return jobs


def _block_diagnostics(
    cfg: Config,
    networks: Networks,
    split: str,
    seed: int,
    key: str,
    md5s: dict[str, str] | None,
) -> pd.DataFrame:
    """Every diagnostic of `beyond.diagnostics` on one block (`network_diagnostics`)."""
    which = set(cfg.beyond.diagnostics)
    cuts, kind = diagnostic_cuts(cfg), networks.splits[split].kind
    bs, precision = cfg.train.eval_batch_size, networks.precision
    md5 = (md5s or {}).get
    out = []

    def load(job: Job) -> TransferNet:
        return networks.load(job, md5(job.network, "")).to(networks.device)

    def add(rows: pd.DataFrame, key: dict, diagnostic: str, variant: str | None = None):
        rows = rows.assign(**key, diagnostic=diagnostic)
        out.append(rows.assign(variant=variant) if variant else rows)

    block = {"split": split, "seed": seed}
    jobs = {t: base_job(split, kind, seed, t) for t in ("A", "B")}
    bases = {t: load(job) for t, job in jobs.items()}
    if "reinit" in which:
        for t, net in bases.items():
            initial = build(net.cfg, networks.init_seed(jobs[t]))
            fresh = build(net.cfg, derive_seed("reinit-fresh", split, seed, t))
            rows = reinit_rows(net, initial, fresh, networks.task(split, t), bs, precision)
            add(rows, block | {"direction": "", "task": t}, "reinit")
    for direction in cfg.study.directions:
        s, t = direction.split("->")
        data, where = networks.task(split, t), block | {"direction": direction, "task": t}
        if "stitching" in which:
            stitch_seed = derive_seed("stitch", split, seed, direction)
            rows = stitching_rows(
                bases[s], bases[t], cuts, data, cfg.train, cfg.beyond, stitch_seed, precision
            )
            add(rows, where, "stitching")
        for n in cuts if which & {"interpolation", "transfusion"} else []:
            anb_job = Job(split, kind, seed, direction, s, t, "AnB+", n)
            anb = load(anb_job)
            if "interpolation" in which:
                bnb = load(Job(split, kind, seed, direction, s, t, "BnB+", n))
                points = cfg.beyond.interpolation_points
                for variant, end, layers in (
                    ("to BnB+", bnb, None),
                    ("to source", bases[s], range(1, n + 1)),
                ):
                    rows = interpolation_rows(anb, end, data, points, layers, bs, precision)
                    add(rows.assign(n=n), where, "interpolation", variant)
            if "transfusion" in which:
                start, _ = networks.build(anb_job, md5(anb_job.source.network, ""))
                data_seed = derive_seed("data", split, seed, t)
                draw = derive_seed("transfusion", split, seed, direction, n)
                name = f"{split}-s{seed}-{anb_job.name}-scale.pt"
                partial = networks.partial_dir / "diagnostics" / name
                resume = (partial, partial_key(key, CODE_DIGEST, n, device=networks.device))
                rows = transfusion_rows(start, n, anb, data, cfg.train, data_seed, draw, resume)
                add(rows, where, "transfusion")
    return pd.concat(out, ignore_index=True).reindex(columns=COLUMNS)


CODE_DIGEST = _code_digest()  # at import: the code this process runs
