"""Typed, validated settings read from params.yaml; a bad key or value names itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from transferability.models import check_arch, num_layers

TREATMENTS = ("BnB", "BnB+", "AnB", "AnB+", "RnB")
DIRECTIONS = ("A->B", "B->A")


class ConfigError(ValueError):
    """A bad setting; the message names the key."""


class Section(BaseModel):
    # allow_inf_nan: .inf or .nan in a float setting is refused, naming the key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v, info: ValidationInfo):
        """true/false where a number is expected (epochs: true) is an error, not 1 or 0."""
        if isinstance(v, bool) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number or text, not true/false")
        return v


def _takes_bool(tp) -> bool:
    return tp is bool or any(_takes_bool(a) for a in get_args(tp))


class DataConfig(Section):
    # "torchvision" downloads CIFAR-10; otherwise a CIFAR-style ImageFolder folder or archive.
    source: str = "torchvision"
    # the dataset's name in the report, MLflow and its folders; null: CIFAR-10 for CIFAR-10's
    # classes, else the source's file name. Another dataset's files go under folders named after it
    name: str | None = None
    download_root: str = "data/raw"
    prepared: str = "data/prepared/dataset.npz"
    image_size: Annotated[int, Field(ge=8, le=512)] = 32
    # the first k images of each class; null takes them all
    train_per_class: Annotated[int, Field(ge=1)] | None = 250
    test_per_class: Annotated[int, Field(ge=1)] | None = None
    # the last k training images of each class are held out as the validation split: never
    # trained on; convergence and every tuned choice are judged on it, never on the test set
    val_per_class: Annotated[int, Field(ge=0)] = 500


class SplitConfig(Section):
    random_seeds: list[Annotated[int, Field(ge=0)]] = list(range(10))
    dissimilar: bool = True
    # the dissimilar split's two named groups of classes (A, then B): CIFAR-10's analogue of the
    # paper's man-made against natural; another dataset names its own (or dissimilar: false)
    dissimilar_groups: dict[str, list[str]] = {
        "vehicles": ["airplane", "automobile", "ship", "truck"],
        "animals": ["bird", "cat", "deer", "dog", "frog", "horse"],
    }
    custom: dict[str, dict[Literal["A", "B"], list[str]]] = {}
    dir: str = "data/splits"

    @field_validator("dissimilar_groups")
    @classmethod
    def _groups(cls, v):
        if len(v) != 2 or not all(v.values()):
            raise ValueError(f"needs two named, non-empty groups of classes, got {v}")
        a, b = v.values()
        both = sorted(set(a) & set(b))
        if both:
            raise ValueError(f"classes {both} are in both groups")
        return v

    @field_validator("custom")
    @classmethod
    def _custom(cls, v):
        for name, tasks in v.items():
            if set(tasks) != {"A", "B"}:
                raise ValueError(f"split {name!r} needs both A and B")
            for task, classes in tasks.items():
                twice = sorted({c for c in classes if classes.count(c) > 1})
                if twice:
                    raise ValueError(f"split {name!r}: task {task} names {twice} twice")
            both = sorted(set(tasks["A"]) & set(tasks["B"]))
            if both:
                raise ValueError(f"split {name!r}: classes {both} are in both A and B")
        return v

    @model_validator(mode="after")
    def _some(self):
        if not self.random_seeds and not self.dissimilar and not self.custom:
            raise ValueError("random_seeds is empty and no other split is enabled")
        if len(set(self.random_seeds)) != len(self.random_seeds):
            raise ValueError("random_seeds names a seed twice")
        return self


class ModelConfig(Section):
    # cifar5 | alexnet8 | package.module:function, a function that returns the network's layers
    # (models.custom_layers; e.g. transferability.resnet:layers, a small ResNet)
    arch: str = "cifar5"
    width: Annotated[float, Field(gt=0, le=16)] = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25
    # he: He-normal (default); torch: PyTorch's default (Kaiming-uniform, a=sqrt(5));
    # gaussian: the original Caffe nets' N(0, 0.01) weights
    init: Literal["he", "torch", "gaussian"] = "he"

    @field_validator("arch")
    @classmethod
    def _arch(cls, v):
        check_arch(v)  # built in, or importable and callable; what it builds: Config._cuts
        return v


class TrainConfig(Section):
    epochs: Annotated[int, Field(ge=1)] = 80
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0, le=10)] = 0.02
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = True
    weight_decay: Annotated[float, Field(ge=0, le=0.1)] = 5e-4
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0, le=1000)] = 1.0
    step_every: Annotated[int, Field(ge=1)] = 10  # epochs between x0.1 steps ("step" schedule)
    augment: bool = True
    crop_padding: Annotated[int, Field(ge=0, le=16)] = 4
    crop_fill: Literal["zeros", "reflect"] = "reflect"  # what the translated border shows
    eval_batch_size: Annotated[int, Field(ge=1)] = 1000
    eval_every: Annotated[int, Field(ge=1)] = 8  # epochs between validation scores (and the last)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # CPU threads per network; null: torch's default, or cores / study.workers in local workers
    threads: Annotated[int, Field(ge=1)] | None = None
    progress: bool = True
    # an unfinished network saves its state at most this often (seconds), so that a stopped
    # study or pilot goes on from there; 0: at every epoch
    save_every_s: Annotated[float, Field(ge=0)] = 300


class StudyConfig(Section):
    seeds: list[int] = [0]
    # init seeds of the dissimilar split (its blocks); null: the same as `seeds`
    dissimilar_seeds: list[int] | None = [0, 1, 2, 3]
    directions: list[Literal["A->B", "B->A"]] = list(DIRECTIONS)
    treatments: list[Literal["BnB", "BnB+", "AnB", "AnB+", "RnB"]] = list(TREATMENTS)
    cuts: Literal["all"] | list[int] = "all"
    models_dir: str = "models"
    results_dir: str = "results"
    mlflow: bool = True  # log every network as an MLflow run
    # where networks train: local (this machine; workers > 1 runs that many processes) or ray
    executor: Literal["local", "ray"] = "local"
    workers: Annotated[int, Field(ge=1)] = 2  # each with train.threads (null: cores / workers)
    retries: Annotated[int, Field(ge=0)] = 1  # a failed network is retried, then reported
    gpus_per_network: Annotated[float, Field(gt=0, le=8)] = 0.25  # ray: GPU share per task

    @field_validator("seeds", "dissimilar_seeds", "directions", "treatments", "cuts")
    @classmethod
    def _nonempty_unique(cls, v):
        if v == "all" or v is None:
            return v
        if not v:
            raise ValueError("must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"names an entry twice: {v}")
        return v


# rules v2: each claim's smallest effect size of interest δ, half the paper's size of the same
# statistic (analysis/paper.py; first_layer_general: half the smallest specificity the paper
# reads as a drop; boost_shrinks_with_data: the boost over the selffer's δ)
SESOI = {
    "first_layer_general": 0.8,
    "coadaptation_middle": 0.6,
    "specificity_grows": 4.1,
    "finetune_recovers": 0.5,
    "boost_over_base": 0.8,
    "boost_over_selffer": 0.7,
    "dissimilar_worse": 5.6,
    "dissimilar_dose_response": 5.6,
    "random_frozen_collapse": 45.1,
    "boost_shrinks_with_data": 0.7,
    # the diagnostics (beyond the paper, part 2; analysis/claims.py explains each δ)
    "stitch_penalty_below_specificity": 0.8,
    "reinit_first_layer_critical": 5.0,
    "finetune_stays_in_source_basin": 1.0,
    "reuse_beats_scale": 0.7,
}


class AnalysisConfig(Section):
    """The rules of the claims, fixed before the results are looked at (analysis/claims.py)."""

    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    min_blocks: Annotated[int, Field(ge=2)] = 5  # random-split blocks needed for any verdict
    min_blocks_dissimilar: Annotated[int, Field(ge=2)] = 3
    # rules v2: points (normalised claims: % of baseB above chance), one per registered claim
    sesoi: dict[str, Annotated[float, Field(gt=0)]] = SESOI
    # a network failed to learn when its final training accuracy is within this many points
    # of chance: named in the results and the report, kept as an outcome of its treatment
    failed_margin: Annotated[float, Field(ge=0, le=50)] = 5.0
    # rules v1 (the reference study's registration): the equivalence margin of
    # first_layer_general, and the convergence checks' limits (v2 keeps converged_max_gain)
    equivalence_margin: Annotated[float, Field(gt=0, le=20)] = 1.0
    converged_max_gain: Annotated[float, Field(ge=0, le=20)] = 0.5
    selffer_max_gain: Annotated[float, Field(ge=0, le=20)] = 1.0
    # points: a committed network retrained on another kind of processor must come this close
    # (the same seed takes another path there: a cross-machine rerun is like another seed)
    reproduce_tolerance: Annotated[float, Field(gt=0, le=50)] = 4.5

    @field_validator("sesoi")
    @classmethod
    def _every_claim(cls, v):
        missing, unknown = sorted(set(SESOI) - set(v)), sorted(set(v) - set(SESOI))
        if missing or unknown:
            raise ValueError(
                f"needs a δ for every registered claim: missing {missing}, unknown {unknown}"
            )
        return v


class BeyondConfig(Section):
    """After the paper: transfer against target-set size, and layer similarity (linear CKA).

    Both read the first `blocks` random-split blocks of the study (their bases and transfers)."""

    blocks: Annotated[int, Field(ge=1)] = 5
    # target images per class besides the study's own size (data.train_per_class, whose
    # networks come from the study): baseB, BnB+ and AnB+ are trained at each
    datasize_per_class: list[Annotated[int, Field(ge=1)]] = [25, 50, 100]
    datasize_cuts: list[Annotated[int, Field(ge=1)]] = [1, 3]
    # test images (the same number of each of the ten classes) on which layers are compared
    cka_images: Annotated[int, Field(ge=10)] = 2000
    # the diagnostics that pull specificity apart from co-adaptation (diagnostics.py), on the
    # same blocks: which to run (they read the checkpoints; none by default) and at which cuts
    # (null: the study's cuts)
    diagnostics: list[Literal["stitching", "reinit", "interpolation", "transfusion"]] = []
    diagnostics_cuts: list[Annotated[int, Field(ge=1)]] | None = None
    stitch_epochs: Annotated[int, Field(ge=1)] = 10  # epochs of training an affine stitch
    stitch_lr: Annotated[float, Field(gt=0, le=1)] = 1e-3  # Adam's step size for the stitch
    interpolation_points: Annotated[int, Field(ge=2)] = 11  # α = 0, 0.1, ..., 1 at 11

    @field_validator("datasize_per_class", "datasize_cuts", "diagnostics", "diagnostics_cuts")
    @classmethod
    def _sizes(cls, v):
        if v is None:
            return v
        if len(set(v)) != len(v):
            raise ValueError(f"names an entry twice: {v}")
        return sorted(v)


class ReportConfig(Section):
    """The report (pipelines/report.py) of this study, and the studies it draws beside it."""

    # second studies (pipelines/<name>/, derived by `python pipelines/derive.py <name>`) whose
    # committed results the report puts beside this study's: their paper figure, Table 1 and
    # claims side by side, the size axis, and the diagnostics where this study runs none. Each
    # is a dependency of the report stage through its pipelines/<name>/dvc.lock
    beside: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = []

    @field_validator("beside")
    @classmethod
    def _once(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"names a study twice: {v}")
        return v


class Config(Section):
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    study: StudyConfig = StudyConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    beyond: BeyondConfig = BeyondConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _cuts(self):
        try:  # a custom architecture is built here: it must give two layers or more
            layers = self.num_layers
        except Exception as e:  # whatever its function raises
            raise ValueError(
                f"model.arch: {self.model.arch} does not build a network at these settings "
                f"({type(e).__name__}: {e})"
            ) from None
        cuts = self.study.cuts
        if cuts != "all":
            if not cuts:
                raise ValueError("study.cuts: must not be empty")
            bad = [n for n in cuts if not 1 <= n <= layers - 1]
            if bad:
                raise ValueError(
                    f"study.cuts: {bad} out of range 1..{layers - 1} for {self.model.arch}"
                )
        bad = [n for n in self.beyond.datasize_cuts if not 1 <= n <= layers - 1]
        if bad:
            raise ValueError(
                f"beyond.datasize_cuts: {bad} out of range 1..{layers - 1} for {self.model.arch}"
            )
        study = self.data.train_per_class
        if study is not None and study in self.beyond.datasize_per_class:
            raise ValueError(
                f"beyond.datasize_per_class: {study} is the study's own size "
                "(data.train_per_class), whose networks come from the study"
            )
        return self

    @property
    def num_layers(self) -> int:
        m = self.model
        return num_layers(m.arch, width=m.width, dropout=m.dropout, image_size=self.data.image_size)

    @property
    def cuts(self) -> list[int]:
        layers = self.num_layers
        return list(range(1, layers)) if self.study.cuts == "all" else sorted(self.study.cuts)


# ---------------------------------------------------------------------- what a network is
# The one definition of the settings that make a network itself, as dotted keys. The fingerprint
# (networks.Networks.fingerprint), the pilot's recipe id (pilot.recipe_id) and the recipe the report
# states (RECIPE_KEYS) are all cut from it, and dvc.yaml's training stages list it among their
# params (tests/test_identity.py keeps the four in step). The data set's bytes and image size,
# the classes, the job and the source's fingerprint enter the fingerprint from outside the
# settings (`Networks.fingerprint`).
HOW_IT_RUNS = (  # how a network is run, not which network it is
    "train.device",
    "train.threads",
    "train.progress",
    "train.eval_batch_size",
    "train.eval_every",
    "train.save_every_s",
)
BUDGET = ("data.train_per_class", "train.epochs")  # what the convergence pilot varies
SCORED_ON = ("data.test_per_class",)  # the test images: they score a network, never train it
# stated apart in the report: the architecture, the precision (each row records its own) and
# the validation split
STATED_APART = ("model.arch", "model.width", "train.precision", "data.val_per_class")


def _section_keys(section: str) -> list[str]:
    return [f"{section}.{k}" for k in Config.model_fields[section].annotation.model_fields]


# what shapes training, its budget aside: one recipe's runs at several budgets are comparable
RECIPE_SETTINGS = [
    *(k for k in _section_keys("model") + _section_keys("train") if k not in HOW_IT_RUNS + BUDGET),
    "data.val_per_class",  # held out of the training images
]
# a network: its recipe, its budget and the test images it is scored on
NETWORK_SETTINGS = [*RECIPE_SETTINGS, *BUDGET, *SCORED_ON]
# the training recipe the report states; dvc.yaml's aggregate stage lists the same keys as its
# params (summary.json carries them)
RECIPE_KEYS = {
    section: [
        k.partition(".")[2]
        for k in RECIPE_SETTINGS
        if k.startswith(f"{section}.") and k not in STATED_APART
    ]
    for section in ("train", "model")
}


def settings_of(cfg: Config, keys: list[str], precision: str) -> dict[str, dict]:
    """The settings `keys` of `cfg`, by section. train.precision is `precision`, the one resolved
    on this machine, and counts only when it is not fp32, so that the networks trained before
    the setting existed (all fp32) keep their fingerprints."""
    out: dict[str, dict] = {}
    for key in keys:
        section, _, name = key.partition(".")
        value = precision if key == "train.precision" else getattr(getattr(cfg, section), name)
        if key != "train.precision" or value != "fp32":
            out.setdefault(section, {})[name] = value
    return out


def recipe(cfg: Config) -> dict:
    """The training recipe the study's networks share, for the report."""
    return {k: getattr(getattr(cfg, section), k) for section, ks in RECIPE_KEYS.items() for k in ks}


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error naming both lines
    (PyYAML keeps the last one without a word)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is given twice (lines {seen[key]} and {line})",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p} is not a section")
        d = nxt
    d[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """`key.sub=value` strings → a nested dict; values are parsed as YAML (3, [0, 1], true)."""
    out: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = yaml.load(raw, UniqueKeyLoader) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} ({e})") from e
        _set_dotted(out, key.strip(), value)
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _dotted(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + str(k))
        if isinstance(v, dict):
            out |= _dotted(v, f"{prefix}{k}.")
    return out


def validate(raw: dict, where: str = "params", overridden: set[str] = frozenset()) -> Config:
    """Validate settings; an error names the key and where it came from (file or --set)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key, msg = ".".join(str(p) for p in err["loc"]), err["msg"]
            # a rule across sections (Config._cuts) names its key at the start of the message
            named = re.match(r"(?:Value error, )?([a-z_]+(?:\.[a-z_]+)+): (.*)", msg, re.S)
            if not key and named:
                key, msg = named.groups()
            key = key or "(top level)"
            value = err.get("input")
            shown = "" if isinstance(value, dict) or named else f" (got {value!r})"
            parts = key.split(".")
            came = (
                "--set"
                if any(".".join(parts[:i]) in overridden for i in range(1, len(parts) + 1))
                else where
            )
            lines.append(f"{came}: {key}: {msg}{shown}")
        raise ConfigError("\n".join(lines)) from None


def load(path: str | Path | None = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read params.yaml (a missing file means all defaults) and apply --set overrides."""
    raw: dict = {}
    where = "settings"
    if path is not None and Path(path).exists():
        where = str(path)
        try:
            raw = yaml.load(Path(path).read_text(), UniqueKeyLoader) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    elif path is not None and str(path) != "params.yaml":
        raise ConfigError(f"params file not found: {path}")
    over = parse_overrides(overrides or [])
    return validate(_merge(raw, over), where, _dotted(over))


def profile_overrides(name: str, path: str | Path = "profiles.yaml") -> list[str]:
    """A named profile's overrides as `key=value` strings (values in YAML's flow style); every
    key must exist in params.yaml's sections, since `dvc exp run -S` only overrides those."""
    path = Path(path)
    try:
        profiles = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"profiles file {path} cannot be read ({e})") from e
    if name == "reference":
        return []
    if name not in profiles:
        known = ", ".join(["reference", *profiles])
        raise ConfigError(f"{path}: no profile {name!r} (known: {known})")
    out = []
    for key, value in (profiles[name] or {}).items():
        flow = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        out.append(f"{key}={flow.removesuffix(chr(10) + '...').strip()}")
    return out
