"""Results tables → one number per block: the unit table, block means, intervals, the gaps,
the accuracy table and the paper's Table 1.

The unit of replication is the **block**: one (split, seed), holding both bases and both
directions. Networks inside a block are not independent (both directions share both bases; the
cuts of one direction share one baseB), so every statistic is first averaged inside a block
(over directions, and over cuts where a statistic names a range) and only then given a
Student-t interval over blocks (df = blocks − 1). Paired differences stay paired inside the block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from transferability.config import TREATMENTS, AnalysisConfig

UNIT = ["split", "split_kind", "seed", "direction"]
BLOCK = ["split", "split_kind", "seed"]

# name: (minuend, subtrahend), each a treatment column of the per-unit table
GAPS = {
    "co_adaptation": ("baseB", "BnB"),
    "specificity": ("BnB", "AnB"),
    "fine_tuning_benefit": ("AnB+", "AnB"),
    "transfer_boost": ("AnB+", "baseB"),
    "selffer_fine_tuning": ("BnB+", "baseB"),
    "boost_over_selffer": ("AnB+", "BnB+"),
    "random_frozen_drop": ("baseB", "RnB"),
}
TABLE1_ROWS = ("all", "upper_half", "top")
FAILED_COLUMNS = [
    "network",
    "split",
    "seed",
    "treatment",
    "n",
    "direction",
    "train_acc",
    "train_loss",
    "test_acc",
    "chance",
]


# ---------------------------------------------------------------------- tables


def read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False)
    missing = {"network", "split", "seed", "treatment", "n", "test_acc"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a results table (no column {', '.join(sorted(missing))})")
    numeric = (
        "test_acc",
        "train_acc",
        "val_acc",
        "train_images",
        "val_images",
        "test_images",
        "epochs",
        "num_classes",
        "seconds",
    )
    for col in numeric:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("n", "seed"):
        df[col] = df[col].astype(int)
    return df


def unit_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (unit, n): each treatment's test accuracy, the unit's baseB and chance."""
    bases = runs[runs.treatment == "base"]
    transfers = runs[runs.treatment != "base"]
    if transfers.empty:
        raise ValueError("no transfer networks in the results: nothing to compare")
    wide = transfers.pivot_table(
        index=[*UNIT, "target_task", "n"], columns="treatment", values="test_acc", aggfunc="first"
    ).reset_index()
    key = ["split", "seed", "target_task"]
    base = bases.set_index(key)
    idx = pd.MultiIndex.from_frame(wide[key])
    missing = idx.difference(base.index)
    if len(missing):
        raise ValueError(f"results lack the base network of {list(missing)[:3]}")
    wide["baseB"] = base["test_acc"].reindex(idx).to_numpy()
    if "num_classes" in base:
        wide["chance"] = 1 / pd.to_numeric(base["num_classes"]).reindex(idx).to_numpy()
    wide.columns.name = None
    return wide


def block_values(
    units: pd.DataFrame, value: Callable[[pd.DataFrame], pd.Series], cuts=None
) -> pd.Series:
    """`value` of each (unit, n) row, averaged over `cuts` inside each unit, then over the
    directions of each block: one number per block. A unit lacking an input (a treatment, or
    one of the cuts the study trained in the range) gives no number, and a block lacking a
    direction gives none either: a block in progress is not averaged over what it has."""
    sel = units if cuts is None else units[units.n.isin(list(cuts))]
    if sel.empty:
        return pd.Series(dtype=float)
    v = pd.Series(np.asarray(value(sel), dtype=float), index=sel.index)

    def whole(size: int):
        return lambda x: x.mean() if len(x) == size and x.notna().all() else math.nan

    per_unit = v.groupby([sel[c] for c in UNIT]).agg(whole(sel.n.nunique()))
    return per_unit.groupby(level=BLOCK).agg(whole(units.direction.nunique())).dropna()


def complete_blocks(units: pd.DataFrame, directions=None) -> tuple[pd.DataFrame, list[str]]:
    """The rows of blocks that have every direction (`directions`, or all the results hold),
    and the names of the blocks left out: a block counts only with both directions inside it.
    Rows of a direction not asked for (an earlier configuration's) are left out too."""
    want = set(directions) if directions else set(units.direction)
    have = units.groupby(BLOCK).direction.agg(set)
    whole = have[have.map(lambda d: want <= d)]
    keep = pd.MultiIndex.from_frame(units[BLOCK]).isin(whole.index) & units.direction.isin(want)
    partial = [f"{split}/s{seed}" for split, _, seed in have.index.difference(whole.index)]
    return units[keep].reset_index(drop=True), partial


def interval(values, confidence: float, min_blocks: int = 2) -> dict:
    """Mean of block values with its Student-t interval (df = blocks − 1); no interval from
    fewer than `min_blocks` blocks."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    out = {
        "estimate": float(v.mean()) if len(v) else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "blocks": len(v),
    }
    if len(v) >= max(2, min_blocks):
        if np.ptp(v) == 0:
            out["ci_low"] = out["ci_high"] = out["estimate"]
        else:
            ci = stats.ttest_1samp(v, 0.0).confidence_interval(confidence)
            out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    return out


def diff(a: str, b: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda u: u[a] - u[b] if a in u and b in u else pd.Series(math.nan, index=u.index)


def normalised(t: str) -> Callable[[pd.DataFrame], pd.Series]:
    """(acc − chance) / (baseB − chance): comparable across tasks of 4, 5 or 6 classes."""
    return lambda u: (
        (u[t] - u["chance"]) / (u["baseB"] - u["chance"])
        if t in u and "chance" in u
        else pd.Series(math.nan, index=u.index)
    )


def gap_table(units: pd.DataFrame, rules: AnalysisConfig) -> pd.DataFrame:
    """Each gap at each n, per split kind: block means and their interval."""
    rows = []
    for kind, g in units.groupby("split_kind"):
        need = min_blocks(kind, rules)
        for name, (a, b) in GAPS.items():
            for n in sorted(g.n.unique()):
                s = interval(block_values(g, diff(a, b), [n]), rules.confidence, need)
                if s["blocks"]:
                    rows.append({"split_kind": kind, "gap": name, "n": n, **s})
    # a study of some treatments only (study.treatments) may have no gap: its keys still name it
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["split_kind", "gap", "n"])


def accuracy_table(units: pd.DataFrame, rules: AnalysisConfig) -> pd.DataFrame:
    """Each treatment's accuracy at each n per split kind: the mean over blocks (tasks differ in
    difficulty, so no interval on it) and, with an interval, its difference from baseB and its
    chance-normalised accuracy (acc − chance) / (baseB − chance), the scale of the claims that
    compare tasks of different numbers of classes."""
    rows = []
    for kind, g in units.groupby("split_kind"):
        need = min_blocks(kind, rules)
        base = block_values(g, lambda u: u["baseB"])
        rows.append(
            {
                "split_kind": kind,
                "treatment": "baseB",
                "n": 0,
                "mean": base.mean(),
                **_prefixed("vs_base", interval(0 * base, rules.confidence, need)),
                **_prefixed("normalised", interval(base / base, rules.confidence, need), False),
            }
        )
        for t in (t for t in TREATMENTS if t in g):
            for n in sorted(g.n.unique()):
                acc = block_values(g, lambda u, t=t: u[t], [n])
                if len(acc):
                    rel = interval(block_values(g, diff(t, "baseB"), [n]), rules.confidence, need)
                    norm = interval(block_values(g, normalised(t), [n]), rules.confidence, need)
                    rows.append(
                        {
                            "split_kind": kind,
                            "treatment": t,
                            "n": n,
                            "mean": acc.mean(),
                            **_prefixed("vs_base", rel),
                            **_prefixed("normalised", norm, False),
                        }
                    )
    return pd.DataFrame(rows)


def _prefixed(prefix: str, d: dict, blocks: bool = True) -> dict:
    """d's keys with a prefix, but `blocks` (kept as is, or left out)."""
    out = {f"{prefix}_{k}": v for k, v in d.items() if k != "blocks"}
    return {"blocks": d["blocks"], **out} if blocks else out


def min_blocks(kind: str, rules: AnalysisConfig) -> int:
    return rules.min_blocks_dissimilar if kind == "dissimilar" else rules.min_blocks


def table1_ranges(num_layers: int) -> dict[str, tuple[int, int]]:
    """The paper's cut ranges 1–7, 3–7 and 5–7 of 8 layers, scaled to `num_layers`."""
    top = num_layers - 1
    return {
        "all": (1, top),
        "upper_half": (round(3 * num_layers / 8), top),
        "top": (round(5 * num_layers / 8), top),
    }


def table1(units: pd.DataFrame, num_layers: int, rules: AnalysisConfig) -> pd.DataFrame:
    """The paper's Table 1: AnB+ over baseB and over BnB+, averaged over a range of cuts inside
    each block, then over blocks; its three rows (all cuts, upper half, top cuts), then every
    cut on its own (`n1`, `n2`, ...)."""
    rows = []
    ranges = table1_ranges(num_layers) | {f"n{n}": (n, n) for n in range(1, num_layers)}
    for kind, g in units.groupby("split_kind"):
        for label, (lo, hi) in ranges.items():
            row = {"split_kind": kind, "cuts": label, "n_from": lo, "n_to": hi}
            for ref, key in (("baseB", "over_baseB"), ("BnB+", "over_BnB_plus")):
                s = interval(
                    block_values(g, diff("AnB+", ref), range(lo, hi + 1)),
                    rules.confidence,
                    min_blocks(kind, rules),
                )
                row |= {f"{key}_{k}": v for k, v in s.items()}
            if row["over_baseB_blocks"] or label in TABLE1_ROWS:
                rows.append(row)
    return pd.DataFrame(rows)


def failed_networks(runs: pd.DataFrame, margin_points: float) -> pd.DataFrame:
    """The networks that failed to learn: final training accuracy within `margin_points` of
    chance (1 / classes). They stay in every statistic as outcomes of their treatment; this
    table names them."""
    need = {"train_acc", "num_classes"}
    if not need <= set(runs) or runs.empty:
        return pd.DataFrame(columns=FAILED_COLUMNS)
    chance = 1 / pd.to_numeric(runs.num_classes, errors="coerce")
    train = pd.to_numeric(runs.train_acc, errors="coerce")
    bad = runs[train <= chance + margin_points / 100]
    return (
        bad.assign(chance=chance[bad.index]).reindex(columns=FAILED_COLUMNS).reset_index(drop=True)
    )


def without_networks(units: pd.DataFrame, runs: pd.DataFrame, networks) -> pd.DataFrame:
    """`units` with the accuracy of each named network blanked (a failed base blanks baseB of
    every unit that targets it): statistics computed from it leave out the blocks they touch."""
    out = units.copy()
    for r in runs[runs.network.isin(set(networks))].itertuples():
        same = (out.split == r.split) & (out.seed == r.seed)
        if r.treatment == "base":
            out.loc[same & (out.target_task == r.target_task), "baseB"] = math.nan
        elif r.treatment in out:
            at = same & (out.direction == r.direction) & (out.n == r.n)
            out.loc[at, r.treatment] = math.nan
    return out


def paired(units: pd.DataFrame, value, cuts_a, cuts_b) -> pd.Series:
    """value(cuts_a) − value(cuts_b) inside each block."""
    a, b = block_values(units, value, cuts_a), block_values(units, value, cuts_b)
    if a.empty or b.empty:  # a cut the study did not train
        return pd.Series(dtype=float)
    return (a - b).dropna()


def wide_accuracy(acc: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy against n, a column per split kind and treatment (for `dvc plots`);
    baseB, trained once per unit, is repeated along n as the reference line."""
    out = pd.DataFrame({"n": sorted(set(acc.n) - {0})})
    for (kind, t), g in acc.groupby(["split_kind", "treatment"], sort=False):
        col = f"{kind}:{t}"
        if t == "baseB":
            out[col] = float(g["mean"].iloc[0])
        else:
            out[col] = out.n.map(g.set_index("n")["mean"])
    return out
