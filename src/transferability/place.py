"""Where a dataset's files go: results, checkpoints, splits and prepared images of one dataset
never mix with another's.

The reference paths (params.yaml: results/, models/, data/splits/, data/prepared/dataset.npz)
belong to CIFAR-10. A study on another dataset (other class names) writes under folders named
after it (results/<name>/, models/<name>/, data/splits/<name>/, data/prepared/<name>.npz):
`placed` moves the paths there before anything is written. Inside a DVC stage the paths are the
stage's declared outputs and stay as they are; there `claim` refuses to write a results folder
that holds another dataset's rows, naming the settings that move them.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from transferability.config import Config
from transferability.data import CIFAR10_CLASSES, DataError, _is_zip, _iter_folder, _layout
from transferability.io import write_json

IDENTITY = "dataset.json"  # in a results folder: the dataset its rows belong to


@dataclass(frozen=True)
class DatasetId:
    """A dataset as its results record it: its name and its classes, in label order."""

    name: str
    classes: tuple[str, ...]

    @property
    def is_reference(self) -> bool:
        return self.classes == CIFAR10_CLASSES

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "dataset"


def source_classes(source: str, prepared: Path) -> tuple[str, ...] | None:
    """A data source's class names, without decoding an image: from the prepared cache when it
    was prepared from this source, else from the folder's or archive's layout; None when the
    source cannot be read (`prepare` then says why)."""
    if source == "torchvision":
        return CIFAR10_CLASSES
    try:
        with np.load(prepared, allow_pickle=False) as z:
            if str(z["source"]) == source:
                return tuple(str(c) for c in z["classes"])
    except (OSError, ValueError, KeyError):
        pass
    path = Path(source)
    try:
        if path.is_dir():
            names = list(_iter_folder(path))
        elif _is_zip(path):
            with zipfile.ZipFile(path) as zf:
                names = [n.rstrip("/") for n in zf.namelist()]
        else:
            with tarfile.open(path, "r:*") as tf:
                names = [m.name.rstrip("/") for m in tf]
        return tuple(sorted(_layout(names, str(path))["train"]))
    except (OSError, DataError, tarfile.TarError, zipfile.BadZipFile, EOFError):
        return None


def identify(cfg: Config, classes: tuple[str, ...] | list[str]) -> DatasetId:
    """The dataset of these classes: data.name if set, else CIFAR-10 for CIFAR-10's classes,
    else the source's file name (an archive's without its extensions)."""
    classes = tuple(classes)
    if cfg.data.name:
        return DatasetId(cfg.data.name, classes)
    if classes == CIFAR10_CLASSES:
        return DatasetId("CIFAR-10", classes)
    return DatasetId(Path(cfg.data.source).name.split(".")[0] or "dataset", classes)


def placed(cfg: Config, log=print) -> Config:
    """cfg with another dataset's paths under folders named after it (unchanged for CIFAR-10,
    for a source that cannot be read, and inside a DVC stage)."""
    if os.environ.get("DVC_STAGE"):
        return cfg
    classes = source_classes(cfg.data.source, Path(cfg.data.prepared))
    if classes is None:
        return cfg
    ident = identify(cfg, classes)
    if ident.is_reference:
        return cfg
    slug = ident.slug

    def under(path: str) -> str:
        p = Path(path)
        return path if slug in p.parts else str(p / slug)

    prepared = Path(cfg.data.prepared)
    moved = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(
                update={
                    "prepared": str(
                        prepared if prepared.stem == slug else prepared.with_name(f"{slug}.npz")
                    )
                }
            ),
            "split": cfg.split.model_copy(update={"dir": under(cfg.split.dir)}),
            "study": cfg.study.model_copy(
                update={
                    "results_dir": under(cfg.study.results_dir),
                    "models_dir": under(cfg.study.models_dir),
                }
            ),
        }
    )
    if moved != cfg:
        log(
            f"data: {ident.name} (not CIFAR-10): its files go to {moved.study.results_dir}/, "
            f"{moved.study.models_dir}/, {moved.split.dir}/ and {moved.data.prepared}"
        )
    return moved


def recorded(folder: Path) -> DatasetId | None:
    """The dataset a results folder holds, as its dataset.json records it (None: none yet)."""
    path = Path(folder) / IDENTITY
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        return DatasetId(str(d["name"]), tuple(d["classes"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} cannot be read ({e}): it names the dataset of {folder}") from e


def recorded_dataset(folder: Path) -> dict | None:
    """A results folder's dataset as the report reads it: {"name", "classes"} (None: unknown)."""
    ident = recorded(folder)
    return None if ident is None else {"name": ident.name, "classes": list(ident.classes)}


def claim(folder: Path, ident: DatasetId) -> None:
    """Record that `folder` holds `ident`'s results; refuse if it holds another dataset's."""
    folder = Path(folder)
    have = recorded(folder)
    if have is None:
        write_json(folder / IDENTITY, asdict(ident) | {"classes": list(ident.classes)})
        return
    if have.classes != ident.classes:
        slug = ident.slug
        raise DataError(
            f"{folder}/ holds the results of {have.name} ({len(have.classes)} classes: "
            f"{', '.join(have.classes[:4])}, ...), not of {ident.name}: write {ident.name}'s "
            f"elsewhere, e.g. --set study.results_dir={folder / slug} "
            f"--set study.models_dir=models/{slug} --set split.dir=data/splits/{slug} "
            f"--set data.prepared=data/prepared/{slug}.npz"
        )
