"""`TransferNet`: layers in an `nn.ModuleList`, so that "the first n layers" is a slice.

A *layer* is what the paper counts as one: a convolution or a linear map together with
its nonlinearity, pooling and dropout. Architectures are plain lists of layer specs,
looked up by name; a width multiplier scales every hidden width.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from transferability.io import atomic_write

CHECKPOINT_FORMAT = "transferability-checkpoint/1"


@dataclass(frozen=True)
class ConvSpec:
    channels: int
    pool: bool


@dataclass(frozen=True)
class FCSpec:
    features: int  # 0 for the output layer: the number of classes


# conv layers are 3x3 (padding 1) + ReLU (+ 2x2 max-pool); fc layers are Linear + ReLU + dropout,
# except the last, a plain Linear onto the classes. Max-pooling and ReLU commute exactly (ReLU is
# monotonic, and a window whose maximum is negative passes no gradient either way), so a pooled
# layer pools first: the same outputs and gradients bit for bit, ReLU on a quarter of the values.
ARCHITECTURES: dict[str, tuple[ConvSpec | FCSpec, ...]] = {
    # 3 conv + 2 FC, ~0.88M parameters at width 1, ~90% of them in fc4 as in AlexNet.
    "cifar5": (
        ConvSpec(32, True),
        ConvSpec(64, True),
        ConvSpec(128, True),
        FCSpec(384),
        FCSpec(0),
    ),
    # 5 conv + 3 FC: the paper's depth (AlexNet without LRN and grouping), sized for 32x32.
    "alexnet8": (
        ConvSpec(64, True),
        ConvSpec(128, True),
        ConvSpec(256, False),
        ConvSpec(256, False),
        ConvSpec(128, True),
        FCSpec(1024),
        FCSpec(1024),
        FCSpec(0),
    ),
}


def num_layers(arch: str) -> int:
    return len(architecture(arch))


def architecture(arch: str) -> tuple[ConvSpec | FCSpec, ...]:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {arch!r} (known: {known})") from None


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    arch: str
    num_classes: int
    width: float = 1.0
    image_size: int = 32
    dropout: float = 0.5
    init: str = "he"  # he | torch | gaussian (see `init_weights`)


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class TransferNet(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        specs = architecture(cfg.arch)
        layers: list[nn.Module] = []
        channels, size = 3, cfg.image_size
        features = None  # set once the first FC layer flattens the maps
        for i, spec in enumerate(specs):
            last = i == len(specs) - 1
            if isinstance(spec, ConvSpec):
                if features is not None:
                    raise ValueError(f"{cfg.arch}: a conv layer cannot follow an FC layer")
                out = _scaled(spec.channels, cfg.width)
                block: list[nn.Module] = [nn.Conv2d(channels, out, 3, padding=1)]
                if spec.pool:
                    block.append(nn.MaxPool2d(2))
                    size //= 2
                block.append(nn.ReLU(inplace=True))
                channels = out
                layers.append(nn.Sequential(*block))
            else:
                block = []
                if features is None:
                    block.append(nn.Flatten())
                    features = channels * size * size
                out = cfg.num_classes if last else _scaled(spec.features, cfg.width)
                block.append(nn.Linear(features, out))
                if not last:
                    block += [nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
                features = out
                layers.append(nn.Sequential(*block))
        self.layers = nn.ModuleList(layers)
        self.frozen = 0
        init_weights(self, cfg.init)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def freeze(self, n: int) -> None:
        """Freeze the first n layers: no gradients (dropout in them stays on, as in Caffe)."""
        if not 0 <= n < self.num_layers:
            raise ValueError(f"cannot freeze {n} of {self.num_layers} layers")
        self.frozen = n
        for i, layer in enumerate(self.layers):
            layer.requires_grad_(i >= n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen and self.training:
            with torch.no_grad():  # nothing below the cut learns: skip its autograd graph
                for layer in self.layers[: self.frozen]:
                    x = layer(x)
            for layer in self.layers[self.frozen :]:
                x = layer(x)
            return x
        for layer in self.layers:
            x = layer(x)
        return x


def init_weights(model: TransferNet, scheme: str) -> None:
    """Initialise every layer from the global RNG; biases start at zero.

    - ``he``: He-normal for the hidden layers, N(0, 0.01) for the classifier;
    - ``torch``: PyTorch's default for Conv2d/Linear (Kaiming-uniform with a = sqrt(5)), zero bias;
    - ``gaussian``: N(0, 0.01) everywhere, the original Caffe nets' filler (their random frozen
      layers collapse to near chance at n >= 3; He keeps the signal alive).
    """
    if scheme not in ("he", "torch", "gaussian"):
        raise ValueError(f"model.init: unknown scheme {scheme!r} (he, torch or gaussian)")
    last = model.num_layers - 1
    for i, layer in enumerate(model.layers):
        for m in layer.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                if scheme == "gaussian" or (scheme == "he" and i == last):
                    nn.init.normal_(m.weight, std=0.01)
                elif scheme == "he":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    m.reset_parameters()
                nn.init.zeros_(m.bias)


def build(cfg: NetConfig, seed: int) -> TransferNet:
    """A freshly initialised network; the same cfg and seed give the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TransferNet(cfg)


def save_checkpoint(path: Path, model: TransferNet, meta: dict) -> None:
    """Atomically write a checkpoint that carries everything needed to rebuild the network."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "net": asdict(model.cfg),
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    try:
        with atomic_write(path, "wb") as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
        raise OSError(
            f"checkpoint {path} could not be written ({e}): free space on that disk (or fix "
            "its permissions) and run again; finished networks are saved"
        ) from e


def damaged_member(path: Path) -> str | None:
    """The first record of checkpoint `path` (a zip archive) whose bytes fail their CRC, or
    None: torch.load reads a checkpoint with a flipped byte in its weights without a word."""
    with zipfile.ZipFile(path) as z:
        return z.testzip()


def load_checkpoint(path: Path) -> tuple[TransferNet, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        bad = damaged_member(path)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} cannot be read: {e}") from e
    if bad:
        raise ValueError(f"checkpoint {path} is damaged: the bytes of {bad} fail their CRC")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    model = TransferNet(NetConfig(**payload["net"]))
    model.load_state_dict(payload["state_dict"])
    return model, payload["meta"]


def copy_layers(dst: TransferNet, src: TransferNet, n: int, src_name: str = "source") -> None:
    """Copy the first n layers of src into dst; both must be the same architecture and width."""
    a, b = src.cfg, dst.cfg
    if (a.arch, a.width, a.image_size) != (b.arch, b.width, b.image_size):
        raise ValueError(
            f"{src_name} is {a.arch} (width {a.width}, {a.image_size}px); "
            f"cannot copy its layers into {b.arch} (width {b.width}, {b.image_size}px)"
        )
    if not 0 <= n < dst.num_layers:
        raise ValueError(f"cut n={n} out of range 1..{dst.num_layers - 1} for {b.arch}")
    with torch.no_grad():
        for i in range(n):
            dst.layers[i].load_state_dict(src.layers[i].state_dict())
