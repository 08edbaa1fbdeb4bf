"""The convergence pilot: how long must a base train before its features stop changing?

For each budget (training images per class × epochs), task and seed it trains a base on the
task's training images and scores it on the validation split (the rule never reads the test
accuracy, which is recorded for the benchmark only), and then
the top-cut selffer: the base's first L−1 layers copied and frozen, the classifier retrained
from a fresh draw for the same schedule. A base has converged when training it twice as long
gains less than the seed-to-seed noise and the selffer no longer beats it (`analysis.
choose_budget` applies the rule). Rows are written as they finish; a rerun skips the budgets
already in the table for the same recipe, and a stopped run goes on from its last saved epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from transferability import data as data_mod
from transferability.config import RECIPE_SETTINGS, Config, settings_of
from transferability.io import atomic_write, write_json
from transferability.networks import CheckpointMismatch, Job, Networks, Trained, base_job
from transferability.splits import Split
from transferability.train import (
    TrainResult,
    machine,
    resolve_device,
    resolve_precision,
    runs_on,
)

COLUMNS = [
    "split",
    "task",
    "seed",
    "per_class",
    "epochs",
    "image_epochs",
    "val_acc",
    "selffer_val_acc",
    "selffer_gain",
    "test_acc",
    "seconds",
    "recipe",
    "settings",
    "machine",
    "precision",  # what the base trained in (a table from before the column: fp32)
]


def precision_of(cfg: Config) -> str:
    """train.precision, resolved on this machine."""
    return resolve_precision(cfg.train.precision, resolve_device(cfg.train.device))


def recipe_id(cfg: Config) -> str:
    """A hash of the settings that shape training other than the budget itself
    (config.RECIPE_SETTINGS; the precision counts only when it is not fp32)."""
    settings = settings_of(cfg, RECIPE_SETTINGS, precision_of(cfg))
    # the shape the committed recipe ids were hashed in
    ident = {
        "model": settings["model"],
        "train": settings["train"],
        "val": settings["data"]["val_per_class"],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def recipe_text(cfg: Config) -> str:
    """The recipe's main settings in words, for tables and plots (recipe_id is the identity)."""
    t = cfg.train
    bf16 = ", bf16" if precision_of(cfg) != "fp32" else ""
    return (
        f"batch {t.batch_size}, lr {t.lr:g}, {t.schedule}, dropout {cfg.model.dropout:g}, "
        f"{t.crop_fill} crops, {cfg.model.init} init{bf16}"
    )


def budget_run(
    cfg: Config,
    dataset: data_mod.Dataset,
    split: Split,
    task: str,
    seed: int,
    selffer: bool = True,
    partial_dir: Path | None = None,
) -> dict:
    """One base and (with `selffer`) its top-cut selffer at cfg's budget, scored on the
    validation split. Without the selffer the selffer columns are empty and `seconds` is the
    base's alone (the time-to-accuracy benchmark).

    Both are built and trained as the study builds and trains its networks (`Networks.train`):
    the selffer is the study's BnB at the top cut, and copies the base's checkpoint, written
    to a temporary folder, only once `Networks.build` has checked that it is that base.

    With `partial_dir`, a stopped run resumes: the checkpoints and unfinished states are kept
    there instead (a finished base, with its result, is not trained again), until the caller
    has written the row and removes the folder."""
    with tempfile.TemporaryDirectory(prefix="pilot-") as tmp:
        models = str(Path(partial_dir, "models")) if partial_dir is not None else tmp
        here = cfg.model_copy(update={"study": cfg.study.model_copy(update={"models_dir": models})})
        networks = Networks(here, [split], dataset)
        job = base_job(split.name, split.kind, seed, task)
        done = Path(partial_dir, "base.json") if partial_dir is not None else None
        where = runs_on(networks.device)  # a base from elsewhere is trained again
        base = _finished(networks, job, done, where)
        if base is None:
            base = networks.train(job)
            if selffer or done is not None:  # the selffer copies this base, never an older one
                networks.save(base)
            if done is not None:
                write_json(done, {"where": where, **asdict(base.result)})
        sel = None
        if selffer:
            sel = networks.train(top_selffer(split, seed, task, base.model.num_layers - 1)).result
    data, result = base.data, base.result
    per_class = len(data.train_x) // len(split.classes(task))
    return {
        "split": split.name,
        "task": task,
        "seed": seed,
        "per_class": per_class,
        "epochs": cfg.train.epochs,
        "image_epochs": len(data.train_x) * cfg.train.epochs,
        "val_acc": round(result.val_acc, 6),
        "selffer_val_acc": round(sel.val_acc, 6) if sel else math.nan,
        "selffer_gain": round(sel.val_acc - result.val_acc, 6) if sel else math.nan,
        "test_acc": round(result.test_acc, 6),  # recorded for the benchmark; chooses nothing
        "seconds": round(result.seconds + (sel.seconds if sel else 0.0), 1),
        "recipe": recipe_id(cfg),
        "settings": recipe_text(cfg),
        "machine": machine(),
        "precision": result.precision,
    }


def _finished(networks: Networks, job: Job, done: Path | None, where: str) -> Trained | None:
    """The base `job` as a stopped pilot run left it finished (checkpoint and result) on this
    kind of machine, thread count and device (`where`), or None."""
    if done is None or not done.is_file():
        return None
    saved = json.loads(done.read_text())
    if saved.pop("where", None) != where:
        return None
    try:
        model = networks.load(job)
    except (FileNotFoundError, CheckpointMismatch):
        return None
    result = TrainResult(**saved)
    return Trained(job, model, result, "", networks.task(job.split, job.target_task))


def top_selffer(split: Split, seed: int, task: str, top: int) -> Job:
    """The selffer of task `task`'s base at cut `top`: the study's BnB there (first `top`
    layers copied from the base and frozen, the rest a fresh draw)."""
    other = "B" if task == "A" else "A"
    return Job(split.name, split.kind, seed, f"{other}->{task}", other, task, "BnB", top)


def run_pilot(
    cfg: Config,
    dataset: data_mod.Dataset,
    split: Split,
    budgets: list[tuple[int, int]],
    tasks: list[str],
    seeds: list[int],
    out: Path,
    log: Callable[[str], None] = print,
    selffer: bool = True,
) -> pd.DataFrame:
    """Every (per_class, epochs) budget × task × seed not yet in `out` for this recipe (rows of
    other recipes in `out` are kept; a second process writing `out` is refused)."""
    from transferability.runner import locked

    out = Path(out)
    with locked(out):
        return _run_pilot(cfg, dataset, split, budgets, tasks, seeds, out, log, selffer)


def _run_pilot(cfg, dataset, split, budgets, tasks, seeds, out: Path, log, selffer):
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame(columns=COLUMNS)
    if "precision" not in done:
        done["precision"] = "fp32"
    rows = done.fillna({"precision": "fp32"}).to_dict("records")
    recipe = recipe_id(cfg)
    have = {
        (r["per_class"], r["epochs"], r["task"], r["seed"])
        for r in rows
        if r["recipe"] == recipe and r["split"] == split.name
    }
    for per_class, epochs in budgets:
        budget = cfg.model_copy(
            update={
                "data": cfg.data.model_copy(update={"train_per_class": per_class}),
                "train": cfg.train.model_copy(update={"epochs": epochs}),
            }
        )
        for task in tasks:
            for seed in seeds:
                if (per_class, epochs, task, seed) in have:
                    continue
                # a stopped run resumes from its last saved epoch (train.save_every_s)
                partial = (
                    out.parent / ".partial" / out.stem / f"{per_class}x{epochs}-{task}-s{seed}"
                )
                row = budget_run(budget, dataset, split, task, seed, selffer, partial)
                rows.append(row)
                with atomic_write(out) as f:
                    pd.DataFrame(rows, columns=COLUMNS).to_csv(f, index=False)
                shutil.rmtree(partial, ignore_errors=True)
                sel = f", selffer {row['selffer_gain'] * 100:+.2f} points" if selffer else ""
                log(
                    f"{per_class}/class × {epochs} epochs, task {task}, seed {seed}: val "
                    f"{row['val_acc']:.4f}{sel} ({row['seconds']:.0f}s)"
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_budgets(cfg: Config, rows: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, dict]:
    """The convergence rule (`analysis.choose_budget`) over this recipe's runs among `rows` (a
    pilot file may hold other recipes' too), its table written beside `out` as
    <stem>_budgets.csv; returns the table and the choice."""
    from transferability.analysis import choose_budget

    table, choice = choose_budget(
        rows[rows.recipe == recipe_id(cfg)], cfg.analysis.converged_max_gain
    )
    with atomic_write(out.with_name(f"{out.stem}_budgets.csv")) as f:
        table.to_csv(f, index=False, float_format="%.4f")
    return table, choice
