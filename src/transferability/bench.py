"""`transferability bench`: where training time goes, on this machine.

On the same network and data it measures training images/s for
(1) a plain torchvision DataLoader pipeline (PIL images, per-sample transforms, workers),
(2) the project's path (uint8 data resident on the device, batch augmentation: `train.train`),
(3) the compute bound: the same training step repeated on one pre-made batch, no input work;
and evaluation images/s, and the FLOP/s that (2) achieves. From (2) it estimates a profile's
wall time; with a results table it also reports the measured one. On a GPU it adds the
device's peak FLOP/s and the peak memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transferability.config import Config
from transferability.data import Dataset, TaskData, task_view
from transferability.models import NetConfig, build
from transferability.splits import Split
from transferability.study import plan
from transferability.train import DeviceTask, evaluate, optimizer_for, train, train_step

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


def compute_bound_steps(data: DeviceTask, cfg: Config, model, steps: int) -> TimedPath:
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
            train_step(model, opt, x, y)

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
    bound = compute_bound_steps(data, cfg, fresh(), steps)

    one_epoch = cfg.train.model_copy(update={"epochs": 1, "progress": False, "warmup_epochs": 0})
    model = fresh()

    def project():  # train() also evaluates the (small) test set once: timed apart, taken out
        train(fresh(), data, one_epoch, seed=0)

    def evaluation():
        evaluate(model, data, data.test_x, data.test_y, cfg.train.eval_batch_size)

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
        f"device {b.device}, {b.threads} CPU threads, batch {b.batch_size}, {b.images} images, "
        f"best of {b.rounds} interleaved rounds",
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
