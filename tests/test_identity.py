"""One definition of what makes a network itself (config.NETWORK_SETTINGS and the cuts of it):
the fingerprint, the pilot's recipe id, the report's recipe and dvc.yaml's training stages all
follow it, setting by setting."""

from pathlib import Path
from types import SimpleNamespace, UnionType
from typing import Literal, Union, get_args, get_origin

import pytest
import yaml

import transferability.train as train_mod
from transferability import config
from transferability.networks import Networks, plan
from transferability.pilot import recipe_id
from transferability.splits import make_splits

from .factories import CLASSES

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("data", "model", "train", "study")
# fed to the fingerprint through the data set it reads (its bytes and image size), not the settings
THROUGH_THE_DATASET = {"data.source", "data.download_root", "data.prepared", "data.image_size"}
# text settings have no order to step along: another valid value each
OTHER_VALUE = {
    "data.source": "elsewhere",
    "data.download_root": "elsewhere",
    "data.prepared": "elsewhere.npz",
    "data.name": "Digits",
    "model.arch": "alexnet8",
    "train.device": "cpu",
    "study.models_dir": "elsewhere",
    "study.results_dir": "elsewhere",
    "study.cuts": [1, 3],
    "train.precision": "bf16",  # auto is fp32 on a CPU without native bf16
}
BASE = {"train": {"precision": "fp32"}}  # bf16 is then another value of train.precision


def every_setting() -> list[str]:
    return [k for s in SECTIONS for k in config._section_keys(s)]


def alternatives(annotation) -> list:
    """The types of a union (int | None: int, None), a Literal kept whole."""
    if get_origin(annotation) is Literal or not get_args(annotation):
        return [annotation]
    if get_origin(annotation) in (Union, UnionType):
        return [a for arg in get_args(annotation) for a in alternatives(arg)]
    return [annotation]


def changed(key: str) -> config.Config:
    """The base settings with `key` alone given another valid value."""
    section, _, name = key.partition(".")
    current = getattr(getattr(config.validate(BASE), section), name)
    field = config.Config.model_fields[section].annotation.model_fields[name]
    candidates = [OTHER_VALUE.get(key)]
    for kind in alternatives(field.annotation):
        if get_origin(kind) is Literal:
            candidates += [v for v in get_args(kind) if v != current]
    if isinstance(current, bool):
        candidates.append(not current)
    elif isinstance(current, int | float):
        candidates += [current + 1, current / 2, 1, 0.5]
    elif isinstance(current, list):
        candidates += [current[::-1], [*current, 7]]
    elif current is None:
        candidates += [1, [1]]
    for value in candidates:
        if value is None or value == current:
            continue
        raw = config._merge(BASE, {section: {name: value}})
        try:
            return config.validate(raw)
        except config.ConfigError:
            continue
    raise AssertionError(f"no other valid value found for {key}: add one to OTHER_VALUE")


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(train_mod, "native_bf16", lambda: False)


def identities(cfg: config.Config) -> tuple[str, str, dict]:
    splits = make_splits(CLASSES, [0], False)
    dataset = SimpleNamespace(source_hash="bytes", image_size=32)
    a1b = next(j for j in plan(cfg, splits) if j.network == "random0/s0/A1B+")
    return Networks(cfg, splits, dataset).fingerprint(a1b), recipe_id(cfg), config.recipe(cfg)


def dotted(keys: dict[str, list[str]]) -> set[str]:
    return {f"{s}.{k}" for s, ks in keys.items() for k in ks}


@pytest.mark.filterwarnings("ignore:train.precision. bf16")  # emulated on this CPU: fine here
@pytest.mark.parametrize("key", every_setting())
def test_a_setting_changes_what_the_definition_says_it_changes(key, no_native_bf16):
    fingerprint, recipe, reported = identities(config.validate(BASE))
    fingerprint2, recipe2, reported2 = identities(changed(key))
    assert (fingerprint2 != fingerprint) == (key in config.NETWORK_SETTINGS), "fingerprint"
    assert (recipe2 != recipe) == (key in config.RECIPE_SETTINGS), "pilot's recipe id"
    assert (reported2 != reported) == (key in dotted(config.RECIPE_KEYS)), "report's recipe"


def test_the_cuts_of_the_definition_nest_and_name_real_settings():
    network, recipe = set(config.NETWORK_SETTINGS), set(config.RECIPE_SETTINGS)
    assert dotted(config.RECIPE_KEYS) <= recipe <= network
    assert network - recipe == {*config.BUDGET, *config.SCORED_ON}
    assert network <= set(every_setting()) - THROUGH_THE_DATASET
    assert not network & set(config.HOW_IT_RUNS)


def stage_params(stage: dict) -> set[str]:
    """A stage's params as dotted keys (a `foreach` stage's `do` block read the same way)."""
    stage = stage.get("do", stage)
    out = set()
    for p in stage.get("params", []):
        out |= {k for keys in p.values() for k in keys} if isinstance(p, dict) else {p}
    return out


def covered(key: str, params: set[str]) -> bool:
    """A param names the key or a section that holds it."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in params for i in range(1, len(parts) + 1))


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", ["train_base", "transfer", "datasize"])
def test_a_training_stage_reruns_when_a_setting_of_its_networks_changes(stage):
    params = stage_params(STAGES[stage])
    assert [k for k in config.NETWORK_SETTINGS if not covered(k, params)] == []


def test_the_aggregate_stage_reads_every_recipe_setting_it_reports():
    """summary.json carries the training recipe to the report, so the stage that writes it
    must re-run when any of those settings changes."""
    params = stage_params(STAGES["aggregate"])
    assert [k for k in sorted(dotted(config.RECIPE_KEYS)) if not covered(k, params)] == []
