"""`transferability bench`: where training time goes, on this machine.

On the same network and data it measures training images/s for
(1) a plain torchvision DataLoader pipeline (PIL images, per-sample transforms, workers),
(2) the project's path (uint8 data resident on the device, batch augmentation: `train.train`),
(3) the compute bound: the same training step repeated on one pre-made batch, no input work;
and evaluation images/s, and the FLOP/s that (2) achieves. From (2) it estimates a profile's
wall time; with a results table it also reports the measured one. On a GPU it adds the
device's peak FLOP/s and the peak memory. (2) and (3) run in train.precision.

With ``--study`` the benchmark is the study itself: one block of the configured study trained
as a study trains (its executor, workers and threads), timed from outside: networks per hour
and image-epochs per second, beside the compute bound (3) in the same precision, and each
profile's cost at that rate.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from transferability.config import Config
from transferability.data import Dataset, TaskData, task_view
from transferability.models import NetConfig, build
from transferability.networks import plan
from transferability.splits import Split
from transferability.train import (
    DeviceTask,
    evaluate,
    optimizer_for,
    resolve_device,
    resolve_precision,
    train,
    train_step,
)

# dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name()
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass
class Bench:
    dataloader_img_s: float
    project_img_s: float
    compute_bound_img_s: float
    eval_img_s: float
    device: str
    threads: int
    batch_size: int
    images: int
    rounds: int
    precision: str = "fp32"
    flop_per_img: float | None = None
    achieved_flop_s: float | None = None
    peak_flop_s: float | None = None
    peak_memory_mib: float | None = None
    study_networks: int | None = None
    study_estimated_s: float | None = None
    study_measured_s: float | None = None

    @property
    def ratios(self) -> dict[str, float]:
        return {
            "project_vs_compute_bound": self.project_img_s / self.compute_bound_img_s,
            "project_vs_dataloader": self.project_img_s / self.dataloader_img_s,
            # the most that any input path could gain over the DataLoader on this machine
            "compute_bound_vs_dataloader": self.compute_bound_img_s / self.dataloader_img_s,
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


TimedPath = tuple[int, Callable[[], None]]  # (images per call, a function that trains on them)


def interleaved(paths: dict[str, TimedPath], device: torch.device, rounds: int) -> dict[str, float]:
    """Images/s of each path: the best of `rounds` timings, the paths taking turns in every
    round, so that a slow spell of a shared machine slows all paths alike rather than whichever
    happened to run during it."""
    best = dict.fromkeys(paths, math.inf)
    for _ in range(rounds):
        for name, (_, fn) in paths.items():
            best[name] = min(best[name], _timed(fn, device))
    return {name: images / best[name] for name, (images, _) in paths.items()}


def dataloader_epoch(task: TaskData, cfg: Config, model, workers: int) -> TimedPath:
    """One training epoch of the textbook pipeline: PIL images, per-sample transforms, a
    DataLoader with workers started afresh for the epoch (PyTorch's default)."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.RandomCrop(task.train_x.shape[-1], padding=cfg.train.crop_padding),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(task.mean.tolist(), task.std.tolist()),
        ]
    )
    images = [Image.fromarray(x.transpose(1, 2, 0)) for x in task.train_x]
    labels = task.train_y.tolist()

    class PILData(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return tf(images[i]), labels[i]

    device = next(model.parameters()).device
    loader = DataLoader(
        PILData(),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    opt = optimizer_for(model, cfg.train)
    model.train()

    def epoch():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return len(loader) * cfg.train.batch_size, epoch


def compute_bound_steps(
    data: DeviceTask, cfg: Config, model, steps: int, precision: str = "fp32"
) -> TimedPath:
    """The training step alone (`train_step`, as `train` runs it), repeated on one pre-made
    batch: no input work at all."""
    device = data.train_x.device
    pick = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
    pick = pick[: cfg.train.batch_size].to(device)  # a batch of mixed classes, as in training
    x, y = data.normalise(data.train_x[pick]), data.train_y[pick]
    opt = optimizer_for(model, cfg.train)
    model.train()

    def run():
        for _ in range(steps):
            train_step(model, opt, x, y, precision=precision)

    return steps * len(x), run


def flop_per_image(model, data: DeviceTask, batch: int) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = data.normalise(data.train_x[:batch])
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), data.train_y[:batch]).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def run_bench(
    cfg: Config,
    dataset: Dataset,
    splits: list[Split],
    images: int,
    rounds: int,
    loader_workers: int,
    device: torch.device,
    measured_s: float | None = None,
) -> Bench:
    """Each path trains for one epoch of `images` images per timing (the compute bound takes
    the same number of steps); `rounds` timings per path, interleaved; the best counts."""
    # repeating one batch drives the gradients towards zero; on a CPU, denormal floats would
    # then slow the compute bound down, so all paths flush them
    torch.set_flush_denormal(True)
    classes = splits[0].classes("A")  # the timed task: task A of the first split
    per_class = max(1, images // len(classes))
    task = task_view(dataset, classes, per_class, 200)
    data = DeviceTask.from_task(task, device)
    net = NetConfig(
        cfg.model.arch, len(classes), cfg.model.width, dataset.image_size, cfg.model.dropout
    )

    def fresh():
        return build(net, 0).to(device=device, memory_format=torch.channels_last)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # the textbook pipeline, as a user would write it: default memory format, fp32, no autotuning
    loader = dataloader_epoch(task, cfg, build(net, 0).to(device), loader_workers)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    steps = math.ceil(len(data.train_x) / cfg.train.batch_size)
    precision = resolve_precision(cfg.train.precision, device)
    bound = compute_bound_steps(data, cfg, fresh(), steps, precision)

    one_epoch = cfg.train.model_copy(update={"epochs": 1, "progress": False, "warmup_epochs": 0})
    model = fresh()

    def project():  # train() also evaluates the (small) test set once: timed apart, taken out
        train(fresh(), data, one_epoch, seed=0)

    def evaluation():
        evaluate(model, data, data.test_x, data.test_y, cfg.train.eval_batch_size, precision)

    paths = {
        "dataloader": loader,
        "compute_bound": bound,
        "project_with_eval": (len(data.train_x), project),
        "eval": (len(data.test_x), evaluation),
    }
    for _, fn in paths.values():  # warm-up: workers, allocator, kernels, autotuning
        fn()
    img_s = interleaved(paths, device, rounds)
    eval_s = len(data.test_x) / img_s["eval"]
    project_s = len(data.train_x) / img_s["project_with_eval"] - eval_s

    bench = Bench(
        img_s["dataloader"],
        len(data.train_x) / max(1e-9, project_s),
        img_s["compute_bound"],
        img_s["eval"],
        str(device),
        torch.get_num_threads(),
        cfg.train.batch_size,
        len(data.train_x),
        rounds,
        precision,
    )
    bench.flop_per_img = flop_per_image(fresh(), data, cfg.train.batch_size)
    bench.achieved_flop_s = bench.flop_per_img * bench.project_img_s
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        bench.peak_flop_s = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
        bench.peak_memory_mib = torch.cuda.max_memory_allocated(device) / 2**20
    bench.study_networks, bench.study_estimated_s = estimate_study(
        cfg, dataset, splits, bench.project_img_s
    )
    bench.study_measured_s = measured_s
    return bench


def estimate_study(
    cfg: Config, dataset: Dataset, splits: list[Split], img_s: float
) -> tuple[int, float]:
    """Networks in the profile and its wall time at `img_s` on one worker, counting one test
    evaluation per epoch at a third of a training image. Not a bound either way: it leaves out
    the cheaper backward pass of frozen networks, and `img_s` is a best timing."""
    jobs = plan(cfg, splits)
    n_classes = len(dataset.classes) / 2
    per_class = cfg.data.train_per_class or (len(dataset.train_x) / len(dataset.classes))
    test_per_class = cfg.data.test_per_class or (len(dataset.test_x) / len(dataset.classes))
    per_net = cfg.train.epochs * n_classes * (per_class + test_per_class / 3)
    return len(jobs), len(jobs) * per_net / img_s / max(1, cfg.study.workers)


def table(b: Bench) -> str:
    r = b.ratios
    lines = [
        f"device {b.device}, {b.precision}, {b.threads} CPU threads, batch {b.batch_size}, "
        f"{b.images} images, best of {b.rounds} interleaved rounds",
        f"{'path':<44}{'images/s':>12}",
        f"{'(1) DataLoader + PIL + per-sample transforms':<44}{b.dataloader_img_s:>12.0f}",
        f"{'(2) project: device-resident uint8, batch aug':<44}{b.project_img_s:>12.0f}",
        f"{'(3) compute bound: one pre-made batch':<44}{b.compute_bound_img_s:>12.0f}",
        f"{'evaluation':<44}{b.eval_img_s:>12.0f}",
        f"project / compute bound: {r['project_vs_compute_bound']:.2f}   "
        f"project / DataLoader: {r['project_vs_dataloader']:.2f}x   "
        f"(compute bound / DataLoader: {r['compute_bound_vs_dataloader']:.2f}x)",
    ]
    if b.flop_per_img:
        util = (
            f" = {100 * b.achieved_flop_s / b.peak_flop_s:.1f}% of the bf16 peak"
            if (b.peak_flop_s)
            else ""
        )
        memory = f"; peak memory {b.peak_memory_mib:.0f} MiB" if b.peak_memory_mib else ""
        lines.append(
            f"training FLOP/image {b.flop_per_img / 1e6:.0f}M; achieved by (2) "
            f"{b.achieved_flop_s / 1e9:.0f} GFLOP/s{util}{memory}"
        )
    if b.study_networks:
        line = f"profile: {b.study_networks} networks, estimated {b.study_estimated_s / 60:.1f} min"
        if b.study_measured_s is not None:
            line += f", measured {b.study_measured_s / 60:.1f} min (sum over results/runs.csv)"
        lines.append(line)
    return "\n".join(lines)


def as_json(b: Bench) -> dict:
    from dataclasses import asdict

    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(b).items()}
    return out | b.ratios


def measured_seconds(runs_csv) -> float | None:
    import pandas as pd

    try:
        return float(pd.read_csv(runs_csv)["seconds"].sum())
    except (OSError, KeyError, ValueError):
        return None


# ---------------------------------------------------------------------- the study as the benchmark


EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)


def evaluations(cfg: Config) -> int:
    """Validation scores one network takes: every train.eval_every epochs and after the last."""
    t = cfg.train
    return t.epochs // t.eval_every + (t.epochs % t.eval_every > 0)


@dataclass
class StudyBench:
    block: str  # split/seed
    networks: int
    image_epochs: int  # training images x epochs, summed over the networks
    eval_images: int  # validation and test images scored, summed over the networks
    seconds: float  # wall time of the whole slice: worker start-up, training, evaluation
    device: str
    precision: str
    layout: str  # e.g. "2 local workers x 1 thread"
    compute_bound_img_s: float
    bound_threads: int
    # name: (networks, training image-epochs, evaluated images)
    profiles: dict[str, tuple[int, int, int]] | None = None

    @property
    def networks_per_hour(self) -> float:
        return 3600 * self.networks / self.seconds

    @property
    def image_epochs_s(self) -> float:
        return self.image_epochs / self.seconds

    @property
    def work_s(self) -> float:
        """Training image-epochs per second, an evaluated image counted as EVAL_COST of one:
        the rate that carries over to a profile whose share of evaluation is another."""
        return (self.image_epochs + EVAL_COST * self.eval_images) / self.seconds


def study_work(cfg: Config, dataset: Dataset, splits: list[Split]) -> tuple[int, int, int]:
    """The networks of the study `cfg` configures, their training image-epochs and the images
    they score (validation and test)."""
    d = cfg.data

    def per_class(labels) -> dict[str, int]:
        return {c: int((labels == i).sum()) for i, c in enumerate(dataset.classes)}

    trained = {
        c: max(0, min(n - d.val_per_class, d.train_per_class or n))
        for c, n in per_class(dataset.train_y).items()
    }
    test = {c: min(n, d.test_per_class or n) for c, n in per_class(dataset.test_y).items()}
    by_name = {s.name: s for s in splits}
    jobs = plan(cfg, splits)
    classes = [c for j in jobs for c in by_name[j.split].classes(j.target_task)]
    scored = sum(evaluations(cfg) * d.val_per_class + test[c] for c in classes)
    return len(jobs), cfg.train.epochs * sum(trained[c] for c in classes), scored


def layout(cfg: Config) -> str:
    """How the study's networks share the machine: workers x threads."""
    ex = cfg.study
    if ex.executor == "ray":
        return f"ray tasks x {cfg.train.threads or 1} thread(s)"
    if ex.workers > 1:
        threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // ex.workers)
        return f"{ex.workers} local workers x {threads} thread(s)"
    return f"1 process x {cfg.train.threads or torch.get_num_threads()} thread(s)"


def run_study_bench(
    cfg: Config,
    dataset: Dataset,
    splits: list[Split],
    workdir: Path,
    images: int,
    rounds: int,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> StudyBench:
    """Train the first block of the configured study (bases, then transfers, as `run_study`
    does: same executor, workers and threads) into `workdir`, and time it; then time the
    compute bound (3) in the same precision, in this process, on `images` images."""
    from transferability.runner import run_study

    first = plan(cfg, splits)[0]
    split = next(s for s in splits if s.name == first.split)
    study = cfg.study.model_copy(
        update={
            "seeds": [first.seed],
            "dissimilar_seeds": [first.seed],
            "models_dir": str(Path(workdir, "models")),
            "results_dir": str(workdir),
            "mlflow": False,
        }
    )
    block = cfg.model_copy(update={"study": study})
    start = time.perf_counter()
    rows = run_study(block, [split], dataset, Path(workdir, "runs.csv"), log=log)
    seconds = time.perf_counter() - start

    torch.set_flush_denormal(True)  # as run_bench: the repeated batch must not slow the bound
    precision = resolve_precision(cfg.train.precision, device)
    classes = split.classes("A")
    task = task_view(dataset, classes, max(1, images // len(classes)), 1)
    data = DeviceTask.from_task(task, device)
    net = NetConfig(
        cfg.model.arch, len(classes), cfg.model.width, dataset.image_size, cfg.model.dropout
    )
    model = build(net, 0).to(device=device, memory_format=torch.channels_last)
    steps = math.ceil(len(data.train_x) / cfg.train.batch_size)
    bound = compute_bound_steps(data, cfg, model, steps, precision)
    bound[1]()  # warm-up
    img_s = interleaved({"bound": bound}, device, rounds)["bound"]
    return StudyBench(
        f"{first.split}/s{first.seed}",
        len(rows),
        sum(int(r["train_images"]) * int(r["epochs"]) for r in rows),
        sum(int(r["val_images"]) * evaluations(cfg) + int(r["test_images"]) for r in rows),
        seconds,
        str(device),
        precision,
        layout(cfg),
        img_s,
        torch.get_num_threads(),
    )


def bench_study(
    cfg: Config,
    dataset: Dataset,
    splits: list[Split],
    images: int,
    rounds: int,
    device: torch.device,
    params_path: str | Path,
    profiles_path: str | Path,
    log: Callable[[str], None] = print,
) -> StudyBench:
    """`bench --study`: one block of the study timed in a temporary folder
    (`run_study_bench`), and the work of the reference profile (`params_path` as it is) and of
    every profile in `profiles_path` (`study_work`), to cost each at the rate measured."""
    import tempfile

    import yaml

    from transferability.config import load, profile_overrides
    from transferability.splits import configured_splits

    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        b = run_study_bench(cfg, dataset, splits, Path(tmp), images, rounds, device, log=log)
    names = ["reference"]
    if Path(profiles_path).is_file():
        names += list(yaml.safe_load(Path(profiles_path).read_text()) or {})
    b.profiles = {}
    for name in names:
        over = [] if name == "reference" else profile_overrides(name, profiles_path)
        p = load(params_path, over)
        b.profiles[name] = study_work(p, dataset, configured_splits(p, dataset.classes))
    return b


def study_table(b: StudyBench) -> str:
    lines = [
        f"one block of the study ({b.block}): {b.networks} networks on {b.device} in "
        f"{b.precision}, {b.layout}",
        f"{'wall time (start-up, training, evaluation)':<48}{b.seconds:>12.1f} s",
        f"{'networks per hour':<48}{b.networks_per_hour:>12.0f}",
        f"{'image-epochs per second (training images)':<48}{b.image_epochs_s:>12.0f}",
        f"{f'compute bound ({b.precision}, 1 process x {b.bound_threads} threads)':<48}"
        f"{b.compute_bound_img_s:>12.0f} images/s",
        f"study / compute bound: {b.image_epochs_s / b.compute_bound_img_s:.2f}",
    ]
    for name, (networks, trained, scored) in (b.profiles or {}).items():
        hours = (trained + EVAL_COST * scored) / b.work_s / 3600
        lines.append(
            f"profile {name}: {networks} networks, {trained / 1e6:.1f}M image-epochs and "
            f"{scored / 1e6:.1f}M images scored: {hours:.1f} h at this rate"
        )
    return "\n".join(lines)


def study_json(b: StudyBench) -> dict:
    from dataclasses import asdict

    return asdict(b) | {
        "networks_per_hour": b.networks_per_hour,
        "image_epochs_s": b.image_epochs_s,
        "work_s": b.work_s,
    }


# ---------------------------------------------------------------------- time to accuracy


def time_to_accuracy_text(curve, summary, margin: float) -> str:
    """What `time-to-accuracy` prints: each recipe's curve, the summary, and for every level
    reached, what each recipe needs to come within `margin` points of it."""
    import pandas as pd

    from transferability.analysis import time_to_level

    lines = []
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        lines.append(curve.drop(columns=["recipe", "split"]).round(2).to_string(index=False))
        lines.append(summary.round(2).to_string(index=False))
        for q in summary[summary.reach != "none"].itertuples():
            what = "converged accuracy" if q.converged else "best so far (not converged)"
            lines.append(f"\nwithin {margin:g} points of {q.settings}'s {what}, {q.level:.2f}:")
            to = time_to_level(curve, q.level, margin).drop(columns=["recipe", "split"])
            lines.append(to.round(2).to_string(index=False))
    return "\n".join(lines)


def plot_time_to_accuracy(curve, summary, margin: float, path: Path) -> None:
    """Validation accuracy against image-epochs, one colour per recipe: the mean over runs
    (thick; the benchmark's criterion reads it) and each task's mean over seeds (thin), with
    the level the recipe must reach (converged − margin: dashed; a lower bound: dotted) and
    the budget that first reaches it ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferability.analysis import RECIPE_KEY

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    summary = summary.set_index(RECIPE_KEY)
    for (recipe, split, per_class), c in curve.groupby(RECIPE_KEY, sort=False):
        s = summary.loc[(recipe, split, per_class)]
        where = f"{split}, " if split else ""
        (line,) = ax.plot(
            c.image_epochs, c.val_acc, "o-", lw=2, label=f"{s.settings} ({where}{per_class}/class)"
        )
        colour = line.get_color()
        for col in [k for k in c.columns if k.startswith("val_") and k != "val_acc"]:
            ax.plot(c.image_epochs, c[col], ".-", lw=0.7, alpha=0.5, color=colour)
            ax.annotate(
                col[4:],
                (c.image_epochs.iloc[-1], c[col].iloc[-1]),
                color=colour,
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        if s.reach != "none":
            ax.axhline(s.level - margin, color=colour, ls="--" if s.converged else ":", lw=0.8)
            hit = c.val_acc[c.epochs == s.reach_epochs].iloc[0]
            ax.plot(s.reach_image_epochs, hit, "o", ms=12, mfc="none", color=colour)
    ax.set_xscale("log", base=2)
    ticks = sorted(set(curve.image_epochs))
    ax.set_xticks(ticks, [f"{t / 1000:g}k" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("image-epochs (training images × epochs)")
    ax.set_ylabel("validation accuracy (%): mean of tasks × seeds;\nthin: each task")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def benchmark(
    cfg: Config,
    dataset: Dataset,
    splits: list[Split],
    images: int,
    rounds: int,
    loader_workers: int,
    study: bool = False,
    params: str = "params.yaml",
    profiles: str = "profiles.yaml",
) -> tuple[str, dict]:
    """`transferability bench`: the training-step benchmark, or with `study` one block of the
    study timed (`bench_study`); returns the table to print and the figures for --json."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    if study:
        timed = bench_study(cfg, dataset, splits, images, rounds, device, params, profiles)
        return study_table(timed), study_json(timed)
    measured = measured_seconds(Path(cfg.study.results_dir) / "runs.csv")
    timed = run_bench(cfg, dataset, splits, images, rounds, loader_workers, device, measured)
    return table(timed), as_json(timed)
