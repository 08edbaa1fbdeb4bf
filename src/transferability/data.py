"""Image sources → one cached set of uint8 arrays; task views over it.

Two sources stand behind `prepare`:

- ``torchvision``: CIFAR-10 through ``torchvision.datasets.CIFAR10`` (downloads when online);
- a CIFAR-style ImageFolder, as a folder or a ``.tar``/``.tar.gz``/``.zip`` archive holding
  ``train/<class>/*`` and ``test/<class>/*`` (at its top or under a single prefix folder).

Every image is converted to RGB at the configured size and decoded exactly once into a
``.npz`` cache, keyed by a content hash of the source, written atomically. 16-bit grey images
are scaled to 8 bits; files over `MAX_FILE_BYTES` and images over `MAX_IMAGE_PIXELS` are
refused before they are read or decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferability.io import atomic_write, sha256_file

CACHE_VERSION = 1
SPLITS = ("train", "test")
MAX_FILE_BYTES = 64 << 20  # per image file: CIFAR-style images are small
MAX_IMAGE_PIXELS = 4096 * 4096  # more is taken for a decompression bomb


# torchvision's CIFAR-10 classes in label order: the dataset of the reference paths
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class DataError(ValueError):
    """Bad input data; the message names the offending path."""


@dataclass
class Dataset:
    """All images of a source as uint8 arrays (N, 3, H, W) with integer labels."""

    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str
    source_hash: str
    conversions: str = ""  # what decoding changed (grey to RGB, resized), in words

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @cached_property
    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of all training images, in [0, 1] units."""
        s = np.zeros(3)
        s2 = np.zeros(3)
        for i in range(0, len(self.train_x), 4096):  # chunked: no float copy of the whole set
            chunk = self.train_x[i : i + 4096].astype(np.float64) / 255.0
            s += chunk.sum(axis=(0, 2, 3))
            s2 += (chunk**2).sum(axis=(0, 2, 3))
        n = self.train_x.shape[0] * self.train_x.shape[2] * self.train_x.shape[3]
        mean = s / n
        return mean, np.sqrt(s2 / n - mean**2)


@dataclass
class TaskData:
    """The images of some classes, labels remapped to 0..k-1 in the order given."""

    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


# --------------------------------------------------------------------------- sources


def _to_rgb_array(data: bytes, size: int, where: str, seen: Counter | None = None) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # PIL only warns below twice its own bomb limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"image too large: {where} ({w}x{h} = {w * h} pixels;"
                        f" at most {MAX_IMAGE_PIXELS})"
                    )
                if seen is not None:  # what decoding changes, said once per kind
                    seen[("mode", im.mode)] += im.mode != "RGB"
                    seen[("size", f"{w}×{h}")] += (w, h) != (size, size)
                im = _to_8_bit(im, where).convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"image too large: {where} ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"image does not decode: {where} ({e})") from e


def _to_8_bit(im: Image.Image, where: str) -> Image.Image:
    """Integer grey images ("I;16*", "I") scaled from 16 bits to 8: `convert` would clip them."""
    if not im.mode.startswith(("I", "F")):
        return im
    a = np.asarray(im)
    if im.mode == "F" or a.min() < 0 or a.max() > 65535:
        raise DataError(
            f"image pixel values of unknown scale: {where} (mode {im.mode}, values"
            f" {a.min()}..{a.max()}; give 8- or 16-bit images)"
        )
    return Image.fromarray(np.rint(a / 257).astype(np.uint8))  # 65535 -> 255


def _layout(names: list[str], where: str) -> dict[str, dict[str, list[str]]]:
    """Find the ImageFolder layout among member/relative paths: {split: {class: [names]}}.

    The layout may sit under one prefix folder. Class folders with no image are kept with an
    empty list, so that they can be reported.
    """
    found: dict[str, dict[str, dict[str, list[str]]]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts):
            if part in SPLITS and len(parts) in (i + 2, i + 3):
                prefix = "/".join(parts[:i])
                classes = found.setdefault(prefix, {}).setdefault(part, {})
                files = classes.setdefault(parts[i + 1], [])
                if len(parts) == i + 3 and not parts[-1].startswith("."):
                    files.append(name)
                break
    roots = {p: s for p, s in found.items() if all(k in s for k in SPLITS)}
    if not roots:
        have = sorted({k for s in found.values() for k in s})
        raise DataError(
            f"{where}: no ImageFolder layout found: need train/<class>/* and test/<class>/*"
            + (f" (found only {', '.join(have)}/)" if have else "")
        )
    if len(roots) > 1:
        raise DataError(f"{where}: several train/ + test/ roots: {', '.join(sorted(roots))}")
    splits = next(iter(roots.values()))
    train_classes, test_classes = set(splits["train"]), set(splits["test"])
    if train_classes != test_classes:
        only_train = sorted(train_classes - test_classes)
        only_test = sorted(test_classes - train_classes)
        raise DataError(
            f"{where}: class folders differ between train/ and test/"
            f" (only in train: {only_train or '-'}; only in test: {only_test or '-'})"
        )
    for split in SPLITS:
        for cls, files in splits[split].items():
            if not files:
                raise DataError(f"{where}: class folder {split}/{cls} has no images")
    return splits


def _iter_folder(root: Path) -> Iterator[str]:
    """Relative paths of every folder (so that empty class folders show) and file under root."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).as_posix()
        yield rel if rel != "." else ""
        for name in sorted(filenames):
            yield f"{rel}/{name}" if rel != "." else name


def _read_source(path: Path, size: int) -> tuple[list[str], dict[str, tuple[np.ndarray, ...]]]:
    """Decode an ImageFolder folder or archive into {split: (x, y)} and the class list."""
    where = str(path)
    if path.is_dir():
        splits = _layout(list(_iter_folder(path)), where)

        def read(name: str) -> bytes:
            if not (path / name).is_file():  # a FIFO or device would be read forever
                raise DataError(f"not a regular file: {where}/{name} (a device, FIFO or bad link)")
            return (path / name).read_bytes()

        return _decode(splits, read, lambda name: (path / name).stat().st_size, size, where)
    if _is_zip(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n.rstrip("/") for n in zf.namelist()]
                splits = _layout(names, where)
                return _decode(splits, zf.read, lambda n: zf.getinfo(n).file_size, size, where)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DataError(
                f"archive cannot be read: {where} (truncated or damaged zip: {e})"
            ) from e
    try:
        # one sequential pass: random access into a compressed tar would re-read it each time
        contents: dict[str, bytes] = {}
        sizes: dict[str, int] = {}
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isdir():
                    contents[m.name.rstrip("/")] = b""
                elif m.isfile():
                    sizes[m.name] = m.size
                    f = tf.extractfile(m) if m.size <= MAX_FILE_BYTES else None  # else refused
                    contents[m.name] = f.read() if f is not None else b""  # if in the layout
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"archive cannot be read: {where} ({e})") from e
    splits = _layout(list(contents), where)
    return _decode(splits, contents.__getitem__, sizes.__getitem__, size, where)


def _is_zip(path: Path) -> bool:
    """By magic, else by name: a truncated zip has lost the directory that is_zipfile looks
    for; a compressed tar is a tar whatever its name says."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        return True
    if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zX":  # gz, bz2, xz
        return False
    return path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)


def _decode(splits, read, size_of, size: int, where: str):
    classes = sorted(splits["train"])
    seen: Counter = Counter()
    out = {}
    for split in SPLITS:
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for name in sorted(splits[split][cls]):
                nbytes = size_of(name)  # checked before the file is read
                if nbytes > MAX_FILE_BYTES:
                    raise DataError(
                        f"file too large: {where}:{name} ({nbytes} bytes;"
                        f" an image may have at most {MAX_FILE_BYTES})"
                    )
                xs.append(_to_rgb_array(read(name), size, f"{where}:{name}", seen))
                ys.append(label)
        out[split] = (np.stack(xs), np.asarray(ys, dtype=np.int64))
    out["conversions"] = conversions_text(seen, size)
    return classes, out


def conversions_text(seen: Counter, size: int) -> str:
    """What decoding changed, e.g. "70,000 grey (L) images made RGB; 70,000 images resized
    from 28×28 to 32×32" ("" when nothing)."""
    parts = [
        f"{n:,} {'grey' if mode in ('L', 'I', 'I;16', 'LA') else mode} ({mode}) images made RGB"
        for (kind, mode), n in sorted(seen.items())
        if kind == "mode" and n
    ]
    parts += [
        f"{n:,} images resized from {dims} to {size}×{size}"
        for (kind, dims), n in sorted(seen.items())
        if kind == "size" and n
    ]
    return "; ".join(parts)


def _source_hash(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for name in _iter_folder(path):
            p = path / name
            h.update(name.encode() + b"\0")
            if p.is_file():
                h.update(bytes.fromhex(sha256_file(p)))  # streamed: any size of file
        return h.hexdigest()
    return sha256_file(path)


def _torchvision_cifar10(root: Path, size: int):
    """Download (or find) CIFAR-10 under root; return its content hash and a reader."""
    from torchvision.datasets import CIFAR10

    try:
        sets = {s: CIFAR10(str(root), train=s == "train", download=True) for s in SPLITS}
    except (RuntimeError, OSError) as e:  # offline: urllib's URLError is an OSError
        raise DataError(
            f"CIFAR-10 not found under {root} and could not be downloaded ({e}). "
            "Connect to the internet, or set data.source to a CIFAR-style ImageFolder "
            "folder or archive, e.g. --set data.source=../shared/data/cifar10-jpeg.tar.gz"
        ) from e
    files = sorted((root / "cifar-10-batches-py").glob("*_batch*"))
    h = hashlib.sha256(b"".join(sha256_file(f).encode() for f in files)).hexdigest()

    def read():
        out = {}
        for split, ds in sets.items():
            x = ds.data.transpose(0, 3, 1, 2)
            if size != x.shape[-1]:
                x = np.stack([_resize(img, size) for img in x])
            out[split] = (np.ascontiguousarray(x), np.asarray(ds.targets, dtype=np.int64))
        if size != 32:
            out["conversions"] = f"60,000 images resized from 32×32 to {size}×{size}"
        return list(sets["train"].classes), out

    return h, read


def _resize(chw: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(chw.transpose(1, 2, 0)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im).transpose(2, 0, 1)


# --------------------------------------------------------------------------- cache


def prepare(source: str, out: Path, image_size: int = 32, root: Path = Path("data/raw")) -> Path:
    """Decode `source` once into the cache file `out` (skipped when it is already current).

    `source` is ``torchvision`` or a path to an ImageFolder folder or archive.
    """
    out = Path(out)
    if source == "torchvision":
        h, read = _torchvision_cifar10(Path(root), image_size)
    else:
        path = Path(source)
        if not path.exists():
            what = "is a link that leads nowhere (broken, or a loop)"
            raise DataError(
                f"data source {what if path.is_symlink() else 'not found'}: {path} (resolved: "
                f"{os.path.abspath(path)}). Give a CIFAR-style ImageFolder folder or .tar.gz/.zip "
                "archive with train/<class>/ and test/<class>/, or data.source=torchvision to "
                "download CIFAR-10"
            )
        if not (path.is_file() or path.is_dir()):  # a device or FIFO would be read forever
            raise DataError(
                f"data source is not a regular file or folder: {path} (a device, FIFO or "
                "socket); give a CIFAR-style ImageFolder folder or .tar.gz/.zip archive"
            )
        h = _source_hash(path)

        def read():
            return _read_source(path, image_size)

    if _cache_matches(out, h, image_size):  # decode only when the cache is stale
        return out
    classes, arrays = read()
    (tx, ty), (vx, vy) = arrays["train"], arrays["test"]
    save(Dataset(classes, tx, ty, vx, vy, str(source), h, arrays.get("conversions", "")), out)
    return out


def save(ds: Dataset, out: Path) -> None:
    """Write `ds` as the .npz cache that `load` reads, atomically."""
    with atomic_write(out, "wb") as f:
        np.savez(
            f,
            version=np.asarray(CACHE_VERSION),
            classes=np.asarray(ds.classes),
            source=np.asarray(ds.source),
            source_hash=np.asarray(ds.source_hash),
            conversions=np.asarray(ds.conversions),
            image_size=np.asarray(ds.image_size),
            train_x=ds.train_x,
            train_y=ds.train_y,
            test_x=ds.test_x,
            test_y=ds.test_y,
        )


def _cache_matches(path: Path, source_hash: str, image_size: int) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            return (
                int(z["version"]) == CACHE_VERSION
                and str(z["source_hash"]) == source_hash
                and int(z["image_size"]) == image_size
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return False  # unreadable: rebuilt


def load(path: Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prepared dataset not found: {path} (run `transferability prepare`)")
    try:
        with np.load(path) as z:
            return Dataset(
                classes=[str(c) for c in z["classes"]],
                train_x=z["train_x"],
                train_y=z["train_y"],
                test_x=z["test_x"],
                test_y=z["test_y"],
                source=str(z["source"]),
                source_hash=str(z["source_hash"]),
                conversions=str(z["conversions"]) if "conversions" in z else "",
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"prepared dataset cannot be read: {path} ({type(e).__name__}: {e});"
            " delete it and re-run `transferability prepare`"
        ) from e


def task_view(
    ds: Dataset,
    classes: list[str],
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_per_class: int = 0,
) -> TaskData:
    """The images of `classes`, relabelled 0..k-1 in that order.

    The last `val_per_class` training images of each class are the validation split, held out
    whatever `train_per_class` is; training takes the first `train_per_class` of the rest (all
    when None), testing the first `test_per_class` test images. Normalisation statistics come
    from the whole training set, so that every task (and so every copied layer) sees inputs on
    the same scale.
    """
    unknown = [c for c in classes if c not in ds.classes]
    if unknown:
        raise DataError(f"classes not in the dataset: {unknown} (it has {ds.classes})")
    remap = np.full(len(ds.classes), -1, dtype=np.int64)
    remap[[ds.classes.index(c) for c in classes]] = np.arange(len(classes))

    def pick(x, y, part):
        idx = [part(np.flatnonzero(y == ds.classes.index(c)), c) for c in classes]
        sel = np.concatenate(idx)
        return x[sel], remap[y[sel]]

    def train_part(where, c):
        if val_per_class >= len(where):
            raise DataError(
                f"data.val_per_class={val_per_class} leaves no training images of {c!r} "
                f"({len(where)} in all)"
            )
        return where[: len(where) - val_per_class][:train_per_class]

    mean, std = ds.mean_std
    train_x, train_y = pick(ds.train_x, ds.train_y, train_part)
    val_x, val_y = pick(ds.train_x, ds.train_y, lambda w, c: w[len(w) - val_per_class :])
    test_x, test_y = pick(ds.test_x, ds.test_y, lambda w, c: w[:test_per_class])
    return TaskData(list(classes), train_x, train_y, test_x, test_y, mean, std, val_x, val_y)
