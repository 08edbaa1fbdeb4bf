"""Class splits of one dataset into two disjoint tasks, A and B."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from transferability.config import Config, SplitConfig
from transferability.io import write_json


@dataclass(frozen=True)
class Split:
    name: str  # e.g. random0, dissimilar
    kind: str  # random | dissimilar | custom
    seed: int | None
    A: tuple[str, ...]
    B: tuple[str, ...]

    def classes(self, task: str) -> list[str]:
        if task not in ("A", "B"):
            raise ValueError(f"task must be A or B, not {task!r}")
        return list(self.A if task == "A" else self.B)

    def validate(self, classes: list[str]) -> None:
        """A and B are disjoint, name no class twice, and cover exactly the dataset's classes."""
        for task, cls in (("A", self.A), ("B", self.B)):
            if not cls:
                raise ValueError(f"split {self.name}: task {task} has no classes")
            twice = sorted({c for c in cls if cls.count(c) > 1})
            if twice:
                raise ValueError(f"split {self.name}: task {task} names {twice} twice")
        both = sorted(set(self.A) & set(self.B))
        if both:
            raise ValueError(f"split {self.name}: classes {both} are in both A and B")
        unknown = sorted(set(self.A + self.B) - set(classes))
        if unknown:
            raise ValueError(f"split {self.name}: classes {unknown} are not in the dataset")
        missing = sorted(set(classes) - set(self.A + self.B))
        if missing:
            raise ValueError(f"split {self.name}: classes {missing} are in neither A nor B")

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> Split:
        try:
            d = json.loads(Path(path).read_text())
            return cls(d["name"], d["kind"], d["seed"], tuple(d["A"]), tuple(d["B"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"split file {path} cannot be read ({e})") from e


def random_split(classes: list[str], seed: int) -> Split:
    """Half of the classes (rounded down) to A, the rest to B; each list in dataset order."""
    order = np.random.default_rng(seed).permutation(len(classes))
    a = sorted(order[: len(classes) // 2])
    b = sorted(order[len(classes) // 2 :])
    split = Split(
        f"random{seed}", "random", seed, tuple(classes[i] for i in a), tuple(classes[i] for i in b)
    )
    split.validate(classes)
    return split


def dissimilar_split(classes: list[str], groups: dict[str, list[str]]) -> Split:
    """The first of two named groups of classes (A) against the second (B); CIFAR-10's are
    vehicles against animals, the analogue of the paper's man-made against natural."""
    a, b = (tuple(g) for g in groups.values())
    split = Split("dissimilar", "dissimilar", None, a, b)
    try:
        split.validate(classes)
    except ValueError as e:
        raise ValueError(
            f"{e}: split.dissimilar_groups ({' against '.join(groups)}) must divide this "
            "dataset's classes into two groups; set them, or split.dissimilar=false"
        ) from None
    return split


def make_splits(
    classes: list[str],
    random_seeds: list[int],
    dissimilar: bool,
    custom: dict[str, dict[str, list[str]]] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> list[Split]:
    splits = [random_split(classes, s) for s in random_seeds]
    if dissimilar:
        splits.append(dissimilar_split(classes, groups or SplitConfig().dissimilar_groups))
    for name, tasks in (custom or {}).items():
        split = Split(name, "custom", None, tuple(tasks["A"]), tuple(tasks["B"]))
        split.validate(classes)
        splits.append(split)
    return splits


def split_path(cfg: Config, name: str) -> Path:
    return Path(cfg.split.dir) / f"{name}.json"


def configured_splits(cfg: Config, classes: list[str]) -> list[Split]:
    s = cfg.split
    return make_splits(classes, s.random_seeds, s.dissimilar, s.custom, s.dissimilar_groups)


def write_splits(cfg: Config, classes: list[str]) -> list[tuple[Path, Split]]:
    """Write every configured split's file; a file that holds another dataset's classes is
    never overwritten (the error names split.dir)."""
    out = []
    for s in configured_splits(cfg, classes):
        path = split_path(cfg, s.name)
        if path.is_file():
            old = Split.load(path)
            other = sorted(set(old.A + old.B) - set(classes))
            if other:
                raise ValueError(
                    f"{path} splits another dataset's classes ({', '.join(other[:4])}, ...): "
                    f"write this dataset's splits elsewhere with --set split.dir=<folder>"
                )
        s.save(path)
        out.append((path, s))
    return out


def load_splits(cfg: Config, classes: list[str]) -> list[Split]:
    """The split files written by `transferability split`, checked against the dataset."""
    out = []
    for expected in configured_splits(cfg, classes):
        path = split_path(cfg, expected.name)
        if not path.is_file():
            raise FileNotFoundError(f"split file not found: {path} (run `transferability split`)")
        split = Split.load(path)
        split.validate(classes)
        if (split.A, split.B) != (expected.A, expected.B):
            raise ValueError(
                f"split file {path} does not match the configured split {expected.name} "
                "(run `transferability split` to rewrite it)"
            )
        out.append(split)
    return out


def named_splits(cfg: Config) -> list[Split]:
    """The configured splits by name and kind only (no classes): enough to plan a study."""
    out = [Split(f"random{s}", "random", s, (), ()) for s in cfg.split.random_seeds]
    if cfg.split.dissimilar:
        out.append(Split("dissimilar", "dissimilar", None, (), ()))
    return out + [Split(name, "custom", None, (), ()) for name in cfg.split.custom]
