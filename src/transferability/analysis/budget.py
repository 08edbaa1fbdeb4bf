"""The budget rules: the convergence pilot's choice, the time-to-accuracy benchmark, and the
study's budget beside the pilot's choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def pooled_seed_sd(runs: pd.DataFrame, by: list[str]) -> float:
    """The seed-to-seed noise of validation accuracy (`val`, points): the SD over seeds within
    each `by` group, pooled over the groups (the root of the mean variance)."""
    var = runs.groupby(by)["val"].var(ddof=1).dropna()
    return float(np.sqrt(var.mean())) if len(var) else math.nan


def choose_budget(pilot: pd.DataFrame, max_selffer_gain: float) -> tuple[pd.DataFrame, dict]:
    """The convergence pilot's rule: the cheapest budget (per_class, epochs) at which
    (a) training twice as long gains less than the seed-to-seed noise, and (b) the top-cut
    selffer beats its base by at most `max_selffer_gain` points on average.

    Gains are paired per (task, seed); the noise is the standard deviation of validation
    accuracy over seeds at one task and budget, pooled over all tasks and budgets. Returns one
    row per budget (in points, with the pooled seed SD and whether it is the chosen one) and
    {"seed_sd": ..., "chosen": (per_class, epochs) or None}.
    """
    p = pilot.copy()
    p["val"] = 100 * p["val_acc"]
    seed_sd = pooled_seed_sd(p, ["task", "per_class", "epochs"])
    key = p.set_index(["task", "seed", "per_class", "epochs"])["val"]
    rows = []
    for (per_class, epochs), g in p.groupby(["per_class", "epochs"]):
        longer = [(t, s, per_class, 2 * epochs) for t, s in zip(g.task, g.seed, strict=True)]
        have = [k for k in longer if k in key.index]
        diffs = [key[k] - key[(k[0], k[1], per_class, epochs)] for k in have]
        gain = float(np.mean(diffs)) if diffs else math.nan
        rows.append(
            {
                "per_class": per_class,
                "epochs": epochs,
                "image_epochs": g.image_epochs.mean(),
                "runs": len(g),
                "val_acc": g.val.mean(),
                "doubling_gain": gain,
                "selffer_gain": 100 * g.selffer_gain.mean(),
                "seconds": g.seconds.mean(),
            }
        )
    table = pd.DataFrame(rows).sort_values(["image_epochs", "per_class"])
    table["converged"] = (table.doubling_gain < seed_sd) & (table.selffer_gain <= max_selffer_gain)
    ok = table[table.converged]
    chosen = None if ok.empty else (int(ok.iloc[0].per_class), int(ok.iloc[0].epochs))
    table["seed_sd"] = seed_sd
    table["chosen"] = [(p, e) == chosen for p, e in zip(table.per_class, table.epochs, strict=True)]
    return table.reset_index(drop=True), {"seed_sd": seed_sd, "chosen": chosen}


TIME_COLUMNS = ["epochs", "image_epochs", "seconds", "val_acc"]  # of a budget, in time_to_level
RECIPE_KEY = ["recipe", "split", "per_class"]  # one time-to-accuracy curve


def time_to_accuracy(runs: pd.DataFrame, margin: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The time-to-accuracy benchmark: for each recipe (on one split, at one task size), how
    many image-epochs and seconds a base needs to come within `margin` points of the recipe's
    own converged validation accuracy.

    A budget counts only with every (task, seed) the recipe's runs have. The converged accuracy
    is the mean at the recipe's longest budget, and counts only if that budget's last doubling
    gained less than the seed-to-seed noise (the SD of validation accuracy over seeds at one
    task and budget, pooled over the recipe's tasks and budgets); otherwise the recipe reads
    "not converged" and, if its last doubling still gained, the time to come within `margin`
    of its longest budget is given as a lower bound (`reach`: measured | lower bound | none).
    Seconds are the median over a budget's runs. Returns (curve: one row per recipe and
    budget, in points, with the mean over seeds of each task as val_<task>; summary: one row
    per recipe).
    """
    p = runs.copy()
    p["val"] = 100 * p["val_acc"]
    p["split"] = p.get("split", "")
    p["settings"] = p["settings"].fillna("") if "settings" in p else ""
    dup = p.duplicated([*RECIPE_KEY, "task", "seed", "epochs"])
    if dup.any():
        r = p[dup].iloc[0]
        raise ValueError(
            f"two runs of recipe {r.recipe}, task {r.task}, seed {r.seed} at {r.epochs} epochs"
            f"{f' on {r.split}' if r.split else ''}: each budget is trained once"
        )
    curves, summary = [], []
    for key, r in p.groupby(RECIPE_KEY, sort=False):
        runs_of = set(zip(r.task, r.seed, strict=True))
        count = r.groupby("epochs").size()
        full = r[r.epochs.isin(count.index[count == len(runs_of)])]
        seed_sd = pooled_seed_sd(full, ["task", "epochs"])
        c = (
            full.groupby("epochs")
            .agg(
                image_epochs=("image_epochs", "mean"),
                val_acc=("val", "mean"),
                seconds=("seconds", "median"),  # robust to a run slowed by other work
                runs=("val", "size"),
            )
            .join(full.pivot_table(index="epochs", columns="task", values="val").add_prefix("val_"))
            .reset_index()
            .sort_values("epochs")
        )
        val = full.set_index(["task", "seed", "epochs"])["val"]
        c["doubling_gain"] = [
            float(np.mean([val[(t, s, e)] - val[(t, s, e // 2)] for t, s in runs_of]))
            if e % 2 == 0 and (e // 2) in set(c.epochs)
            else math.nan
            for e in c.epochs
        ]
        ident = dict(zip(RECIPE_KEY, key, strict=True)) | {"settings": r.settings.iloc[0]}
        curves.append(c.assign(**ident)[[*ident, *c.columns]])
        last = c.iloc[-1] if len(c) else None  # the longest complete budget
        gain = last.doubling_gain if last is not None else math.nan
        converged = gain < seed_sd  # False when either is NaN
        # still rising: its converged accuracy is at least the longest budget's, so the time it
        # needs is at least the first budget within `margin` of that (if accuracy does not fall
        # with longer training): a lower bound
        rising = not converged and gain > 0
        level = last.val_acc if last is not None else math.nan
        first = first_within(c, level, margin) if converged or rising else None
        summary.append(
            ident
            | {
                "runs": len(runs_of),
                "seed_sd": seed_sd,
                "longest_epochs": last.epochs if last is not None else math.nan,
                "last_doubling_gain": gain,
                "converged": bool(converged),
                "converged_acc": level if converged else math.nan,
                "level": level,  # the longest complete budget's accuracy
                "reach": "measured" if converged else "lower bound" if rising else "none",
            }
            | {
                f"reach_{k}": first[k] if first is not None else math.nan
                for k in ("epochs", "image_epochs", "seconds")
            }
        )
    curve = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return curve, pd.DataFrame(summary)


def time_to_level(curve: pd.DataFrame, level: float, margin: float = 0.5) -> pd.DataFrame:
    """For each recipe of a time-to-accuracy curve: the first budget whose mean validation
    accuracy comes within `margin` points of `level` (NaN where none does)."""
    rows = []
    for key, c in curve.groupby(RECIPE_KEY, sort=False):
        first = first_within(c, level, margin)
        rows.append(
            dict(zip(RECIPE_KEY, key, strict=True))
            | {"settings": c.settings.iloc[0]}
            | {k: first[k] if first is not None else math.nan for k in TIME_COLUMNS}
        )
    return pd.DataFrame(rows)


def first_within(curve: pd.DataFrame, level: float, margin: float) -> pd.Series | None:
    """The shortest budget of one recipe's curve whose mean validation accuracy comes within
    `margin` points of `level`, or None."""
    hit = curve[curve.val_acc >= level - margin].sort_values("epochs")
    return hit.iloc[0] if len(hit) else None


def chosen_budget(pilot: pd.DataFrame | None) -> list[int] | None:
    """[per_class, epochs] of the budget the pilot's rule chose (pilot_budgets.csv), or None."""
    if pilot is None or pilot.empty:
        return None
    chosen = pilot[pilot.chosen.astype(str).str.lower().eq("true")]
    return [int(chosen.iloc[0].per_class), int(chosen.iloc[0].epochs)] if len(chosen) else None


def budget_regime(runs: pd.DataFrame, pilot: pd.DataFrame | None) -> dict:
    """The study's budget beside the convergence pilot's choice (pilot_budgets.csv)."""
    bases = runs[runs.treatment == "base"]
    have = len(bases) and {"num_classes", "train_images", "epochs"} <= set(bases)
    per_class = (bases.train_images / bases.num_classes).median() if have else math.nan
    epochs = bases.epochs.median() if have else math.nan
    per_class = None if math.isnan(per_class) else round(per_class)
    epochs = None if math.isnan(epochs) else int(epochs)
    out = {"per_class": per_class, "epochs": epochs, "pilot_chosen": None, "converged": None}
    if pilot is not None and len(pilot):
        out["pilot_chosen"] = chosen_budget(pilot)
        here = pilot[(pilot.per_class == per_class) & (pilot.epochs == epochs)]
        out["converged"] = bool(here.converged.astype(bool).iloc[0]) if len(here) else None
        out["seed_sd"] = float(pilot.seed_sd.iloc[0])
    return out
