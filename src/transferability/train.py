"""The training loop: data resident on the device as uint8, augmented a batch at a time."""

from __future__ import annotations

import math
import platform
import time
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from transferability.config import TrainConfig
from transferability.data import TaskData
from transferability.io import atomic_write
from transferability.models import TransferNet

PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists every device type it knows of
        raise ValueError(
            f"train.device: {name!r} is not a device (auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} asked for, but CUDA is not available")
    return device


@dataclass
class DeviceTask:
    """A task's images on the device as uint8 NCHW, with its normalisation constants."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    @classmethod
    def from_task(cls, task: TaskData, device: torch.device) -> DeviceTask:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        stat = {"device": device, "dtype": torch.float32}
        return cls(
            t(task.train_x),
            t(task.train_y),
            t(task.test_x),
            t(task.test_y),
            torch.as_tensor(task.mean * 255.0, **stat).view(1, -1, 1, 1),
            torch.as_tensor(task.std * 255.0, **stat).view(1, -1, 1, 1),
            t(task.val_x),
            t(task.val_y),
        )

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)


def batch_crop_flip(
    x: torch.Tensor, pad: int, gen: torch.Generator, fill: str = "zeros"
) -> torch.Tensor:
    """Random translation by up to `pad` pixels and horizontal flip, per image.

    The border shows zeros (``fill="zeros"``) or the image mirrored (``"reflect"``).
    """
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        if fill == "reflect":  # reflect-padding needs a float tensor; uint8 values are exact
            xp = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect").to(x.dtype)
        else:
            xp = F.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as PyTorch reports it;
    False where this PyTorch cannot tell. Without it bf16 is emulated and far slower."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # a build without the capability report: assume no
            continue
    return False


def machine() -> str:
    """What a row was computed on: CPU numbers agree bit for bit only on the same kind of
    processor with the same number of threads (read now: a study may set it after starting)."""
    return f"{processor()}; {torch.get_num_threads()} threads"


@cache
def processor() -> str:
    """The kind of processor and torch this is: `machine` without the thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512
    return f"{cpu}; {isa}; torch {torch.__version__}"


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision a network trains and is evaluated in: ``auto`` takes bf16 on CUDA and on
    CPUs with native bf16, fp32 elsewhere. bf16 asked for on a CPU without native bf16 is
    allowed (rows trained in bf16 elsewhere can be reproduced), with a warning: it is emulated."""
    if name == "auto":
        return "bf16" if device.type == "cuda" or native_bf16() else "fp32"
    if name not in PRECISIONS:
        raise ValueError(f"train.precision: {name!r} is not one of auto, {', '.join(PRECISIONS)}")
    if name == "bf16" and device.type == "cpu" and not native_bf16():
        warnings.warn(
            "train.precision: bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) is "
            "emulated: the same network, but many times slower than fp32 (BENCHMARKS.md)",
            stacklevel=2,
        )
    return name


def autocast(device: torch.device, precision: str):
    """bf16 mixed precision (torch.autocast) when `precision` (resolved) is bf16; none in fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at `step`: linear warm-up, then cosine, step or constant."""
    total = cfg.epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    if cfg.schedule == "step":
        return 0.1 ** (step // (cfg.step_every * steps_per_epoch))
    return 1.0


@torch.no_grad()
def evaluate(
    model: TransferNet,
    data: DeviceTask,
    x: torch.Tensor,
    y: torch.Tensor,
    bs: int,
    precision: str = "fp32",
):
    """Accuracy of `model` on (x, y), in large batches, one host sync at the end."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), bs):
        with autocast(x.device, precision):
            out = model(data.normalise(x[i : i + bs]))
        correct += (out.argmax(1) == y[i : i + bs]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(x))


def optimizer_for(model: TransferNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD over the trainable parameters only: frozen layers get no update and no weight decay.

    As in the original Caffe nets, biases get no weight decay; every trainable layer, copied
    or new, learns at the same rate.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite: the settings (learning rate first) are too hot."""


def train_step(
    model: TransferNet,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    label_smoothing: float = 0.0,
    precision: str = "fp32",
):
    """One optimizer step on a normalised batch (in `precision`, resolved); returns logits, loss."""
    with autocast(x.device, precision):
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out, loss


@dataclass
class TrainResult:
    test_acc: float
    val_acc: float
    train_acc: float
    train_loss: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    precision: str = "fp32"  # what it trained in (train.precision, resolved)


def _rng_states(gen: torch.Generator, device: torch.device) -> dict:
    """Every random state the loop draws from: batch order and augmentation (`gen`), dropout."""
    states = {"gen": gen.get_state(), "cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, gen: torch.Generator, device: torch.device) -> None:
    gen.set_state(states["gen"])
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)  # the key names the device


PARTIAL_FORMAT = 1  # what a saved state holds; a new layout discards the old files


def runs_on(device: torch.device) -> str:
    """Where and how a computation runs, as far as its numbers depend on it: the processor and
    thread count (`machine`) and the device."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{machine()} {where}"


def partial_key(*parts: object, device: torch.device) -> str:
    """The key of a saved state: what identifies the network (`parts`), the format, and where
    it trains (`runs_on`)."""
    return " ".join(map(str, (*parts, f"format {PARTIAL_FORMAT}", runs_on(device))))


def _read_partial(path: Path, key: str) -> dict | None:
    """The state an interrupted `train` saved at `path` for the network `key`, or None (none
    there, or one of another network, machine or precision, which is discarded: a network is
    trained on one kind of machine from start to end, so that its row's `machine` is true)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError("not a saved state")
    except Exception as e:  # torch raises several types for a damaged file
        warnings.warn(
            f"{path}: unreadable ({type(e).__name__}); training from the start", stacklevel=3
        )
        return None
    if state.get("key") != key:
        warnings.warn(
            f"{path} was saved by {state.get('key')!r}, not {key!r} (other settings, machine, "
            "threads or precision): training from the start",
            stacklevel=3,
        )
        return None
    return state


def _write_partial(path: Path, state: dict) -> None:
    """Save an unfinished run's state (`train`) atomically; a full disk warns, training goes on."""
    try:
        with atomic_write(path, "wb") as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
        warnings.warn(f"{path} not saved ({e}); training goes on", stacklevel=3)


def train(
    model: TransferNet,
    data: DeviceTask,
    cfg: TrainConfig,
    seed: int,
    desc: str = "train",
    partial: Path | None = None,
    key: str = "",
) -> TrainResult:
    """Train `model` in place on `data` for cfg.epochs; the score is the final test accuracy.

    Validation accuracy is recorded every cfg.eval_every epochs and at the end (convergence is
    judged on it); the test set is scored once, at the end, and chooses nothing. The seed fixes
    the batch order, the augmentation and dropout, so that on the CPU the same seed gives the
    same numbers. Training and evaluation run in train.precision (`resolve_precision`). A
    non-finite training loss stops with `TrainingDiverged`.

    With `partial`, an unfinished run saves its whole state there (weights, optimizer, random
    states, history; at an epoch's end, at most every cfg.save_every_s seconds), and a later
    call with the same `key` (`partial_key`: the network, machine, threads, device, precision)
    goes on from it to the same numbers as one unbroken run. The caller removes the file once
    the network is saved (`Networks.save`): a run stopped after training still resumes.
    """
    if partial is not None and not key:
        raise ValueError("train: a saved state (partial) needs the key of its network")
    device = data.train_x.device
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    model.to(device=device, memory_format=torch.channels_last).train()
    opt = optimizer_for(model, cfg)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    bs = cfg.eval_batch_size
    history: list[dict] = []
    first, before = 0, 0.0  # epochs done and seconds spent before this call
    state = _read_partial(partial, key) if partial is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        first, before, history = state["epoch"], state["seconds"], state["history"]
    start = saved = time.perf_counter()
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=first * steps_per_epoch,
        desc=desc,
        disable=None if cfg.progress else True,  # None: on when stderr is a terminal
        leave=False,
        dynamic_ncols=True,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout
        if state is not None:
            _set_rng_states(state["rng"], gen, device)
        step = first * steps_per_epoch
        for epoch in range(first, cfg.epochs):
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            perm = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                xb, yb = data.train_x[idx], data.train_y[idx]
                if cfg.augment:
                    xb = batch_crop_flip(xb, cfg.crop_padding, gen, cfg.crop_fill)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(cfg, step, steps_per_epoch)
                out, loss = train_step(
                    model, opt, data.normalise(xb), yb, cfg.label_smoothing, precision
                )
                loss_sum += loss.detach() * len(idx)
                correct += (out.detach().argmax(1) == yb).sum()
                step += 1
                bar.update()
                if step % 25 == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum.item() / n,
                "train_acc": correct.item() / n,
                "lr": opt.param_groups[0]["lr"],
            }
            if not math.isfinite(record["train_loss"]):
                bar.close()
                raise TrainingDiverged(
                    f"{desc}: training loss is {record['train_loss']} in epoch {epoch + 1} "
                    f"(train.lr={cfg.lr}): lower train.lr or raise train.warmup_epochs"
                )
            final = epoch + 1 == cfg.epochs
            if len(data.val_x) and (final or (epoch + 1) % cfg.eval_every == 0):
                record["val_acc"] = evaluate(model, data, data.val_x, data.val_y, bs, precision)
            if final:
                record["test_acc"] = evaluate(model, data, data.test_x, data.test_y, bs, precision)
            history.append(record)
            now = time.perf_counter()
            if partial is not None and not final and now - saved >= cfg.save_every_s:
                state = {"key": key, "epoch": epoch + 1, "seconds": before + now - start}
                state |= {"history": history, "model": model.state_dict()}
                state |= {"optimizer": opt.state_dict(), "rng": _rng_states(gen, device)}
                _write_partial(partial, state)
                saved = now
            if not bar.disable:
                bar.set_postfix(
                    loss=f"{record['train_loss']:.3f}",
                    acc=f"{record['train_acc']:.3f}",
                    val=f"{record.get('val_acc', math.nan):.3f}",
                )
    bar.close()
    last = history[-1]
    return TrainResult(
        test_acc=last["test_acc"],
        val_acc=last.get("val_acc", math.nan),
        train_acc=last["train_acc"],
        train_loss=last["train_loss"],
        seconds=before + time.perf_counter() - start,
        history=history,
        precision=precision,
    )
