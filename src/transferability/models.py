"""`TransferNet`: layers in an `nn.ModuleList`, so that "the first n layers" is a slice.

A *layer* is what the paper counts as one: a convolution or a linear map together with
its nonlinearity, pooling and dropout. The built-in architectures are plain lists of layer
specs, looked up by name; a width multiplier scales every hidden width. Any other network is
`package.module:function` (`custom_layers`): a function that returns its layers as a list of
modules, one module per layer (`transferability.resnet:layers` is the worked example).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import zipfile
from collections.abc import Callable
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


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    arch: str
    num_classes: int
    width: float = 1.0
    image_size: int = 32
    dropout: float = 0.5
    init: str = "he"  # he | torch | gaussian (see `init_weights`)


def num_layers(arch: str, **net) -> int:
    """The number of layers of `arch`. A custom one is built to count them, with the NetConfig
    fields in `net` (defaults: 2 classes, NetConfig's others), leaving the global RNG alone."""
    if not is_custom(arch):
        return len(architecture(arch))
    with torch.random.fork_rng(devices=[]):
        return len(custom_layers(NetConfig(arch, **({"num_classes": 2} | net))))


def architecture(arch: str) -> tuple[ConvSpec | FCSpec, ...]:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(
            f"unknown architecture {arch!r} (built in: {known}; or package.module:function)"
        ) from None


def is_custom(arch: str) -> bool:
    """Whether `arch` names a function (`package.module:function`), not a built-in one."""
    return ":" in arch


def check_arch(arch: str) -> None:
    """A ValueError unless `arch` is built in or names a function that can be called with the
    arguments `custom_layers` passes (what it returns is checked when it is built)."""
    if is_custom(arch):
        arch_function(arch)
    else:
        architecture(arch)


# Any other network is `package.module:function`: a function called with these keyword
# arguments (NetConfig's fields of the same names) that returns its layers (`custom_layers`).
LAYER_ARGS = ("num_classes", "width", "dropout", "image_size")


def arch_function(arch: str) -> Callable[..., list[nn.Module]]:
    """The function that `package.module:function` names; a ValueError says why it is not one."""
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", arch):
        raise ValueError(f"{arch!r} is not package.module:function (e.g. mypkg.nets:layers)")
    module_name, _, name = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # not found, or the module itself fails
        raise ValueError(
            f"{arch!r}: module {module_name!r} cannot be imported ({type(e).__name__}: {e}); "
            "is it installed or on PYTHONPATH?"
        ) from None
    fn = getattr(module, name, None)
    if fn is None:
        raise ValueError(f"{arch!r}: module {module_name!r} has no {name!r}")
    if not callable(fn):
        raise ValueError(f"{arch!r}: {name!r} is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind(**dict.fromkeys(LAYER_ARGS))
    except TypeError as e:
        raise ValueError(
            f"{arch!r} must accept the keyword arguments {', '.join(LAYER_ARGS)} "
            f"(**kwargs for those it ignores): {e}"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call tell
        pass
    return fn


def custom_layers(cfg: NetConfig) -> list[nn.Module]:
    """The layers that `cfg.arch` (`package.module:function`) returns for cfg's arguments:

        function(num_classes=..., width=..., dropout=..., image_size=...) -> list[nn.Module]

    one module per layer, input first (RGB images, 3 channels, image_size pixels square),
    the last one giving the num_classes logits. The transfer cut n copies the first n modules
    (their parameters and buffers). A ValueError says what is wrong with what it returned."""
    fn = arch_function(cfg.arch)
    layers = fn(**{k: getattr(cfg, k) for k in LAYER_ARGS})
    if isinstance(layers, nn.ModuleList | nn.Sequential | tuple):
        layers = list(layers)
    if not isinstance(layers, list) or not all(isinstance(m, nn.Module) for m in layers):
        raise ValueError(f"{cfg.arch} must return a list of nn.Module, got {type(layers).__name__}")
    if len(layers) < 2:
        raise ValueError(f"{cfg.arch} returned {len(layers)} layer(s); a network needs 2 or more")
    return layers


def arch_digest(arch: str) -> str | None:
    """For a custom architecture, a hash of the source file of the module that defines it (so
    that an edited network is a new network); None for a built-in one."""
    if not is_custom(arch):
        return None
    fn = arch_function(arch)
    module = inspect.getmodule(fn) or importlib.import_module(arch.partition(":")[0])
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()[:16]


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


def builtin_layers(cfg: NetConfig) -> list[nn.Module]:
    """The layers of a built-in architecture (`ARCHITECTURES`), at cfg's width and image size."""
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
    return layers


class TransferNet(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        layers = custom_layers(cfg) if is_custom(cfg.arch) else builtin_layers(cfg)
        self.layers = nn.ModuleList(layers)
        self.frozen = 0
        init_weights(self, cfg.init)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def freeze(self, n: int) -> None:
        """Freeze the first n layers: no gradients, and their batch norm keeps its running
        statistics (`train`); dropout in them stays on, as in Caffe."""
        if not 0 <= n < self.num_layers:
            raise ValueError(f"cannot freeze {n} of {self.num_layers} layers")
        self.frozen = n
        for i, layer in enumerate(self.layers):
            layer.requires_grad_(i >= n)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferNet:
        """Training or evaluation mode, except that the normalisation layers (BatchNorm and the
        like) of frozen layers always evaluate: they normalise with their source's running
        statistics and never update them, so that a frozen layer stays bitwise equal to its
        source and computes the same function. Copied layers that are fine-tuned train theirs."""
        super().train(mode)
        for layer in self.layers[: self.frozen]:
            for m in layer.modules():
                if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm*, InstanceNorm*
                    m.eval()
        return self

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
    """Initialise every Conv2d and Linear from the global RNG; biases start at zero.

    - ``he``: He-normal for the hidden layers, N(0, 0.01) for the classifier (the last layer);
    - ``torch``: PyTorch's default for Conv2d/Linear (Kaiming-uniform with a = sqrt(5)), zero bias;
    - ``gaussian``: N(0, 0.01) everywhere, the original Caffe nets' filler (their random frozen
      layers collapse to near chance at n >= 3; He keeps the signal alive).

    Other modules (BatchNorm: weight 1, bias 0) keep what their constructor gave them.
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
                if m.bias is not None:
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
