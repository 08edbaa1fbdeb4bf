"""Results → per-cut accuracies with 95% confidence intervals, the paper's gaps, and Table 1.

A *unit* is one (split, seed, direction): one target task with its own baseB, BnB, AnB, ...
Accuracies are pooled over units; gaps are differences *within* a unit (paired), then pooled,
so that the spread between splits does not blur them. Intervals are Student-t intervals over
the units (NaN where there is one).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from transferability.io import atomic_write, write_json

UNIT = ["split", "split_kind", "seed", "direction"]

# name: (minuend, subtrahend), each a treatment column of the per-unit table
GAPS = {
    "co_adaptation": ("baseB", "BnB"),
    "specificity": ("BnB", "AnB"),
    "fine_tuning_benefit": ("AnB+", "AnB"),
    "transfer_boost": ("AnB+", "baseB"),
    "selffer_fine_tuning": ("BnB+", "baseB"),
    "random_frozen_drop": ("baseB", "RnB"),
}


def mean_ci(values, confidence: float = 0.95) -> dict:
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "count": n}
    sem = stats.sem(v)
    if sem == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "count": n}
    lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return {"mean": mean, "ci_low": float(lo), "ci_high": float(hi), "count": n}


def read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False)
    for col in ("test_acc", "train_acc"):
        df[col] = df[col].astype(float)
    for col in ("n", "seed"):
        df[col] = df[col].astype(int)
    return df


def unit_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (unit, n): the test accuracy of each treatment and of the unit's baseB."""
    bases = runs[runs.treatment == "base"]
    transfers = runs[runs.treatment != "base"]
    if transfers.empty:
        raise ValueError("no transfer networks in the results: nothing to compare")
    wide = transfers.pivot_table(
        index=[*UNIT, "target_task", "n"], columns="treatment", values="test_acc", aggfunc="first"
    ).reset_index()
    base_acc = bases.set_index(["split", "seed", "target_task"])["test_acc"]
    keys = list(zip(wide.split, wide.seed, wide.target_task, strict=True))
    missing = [k for k in keys if k not in base_acc.index]
    if missing:
        raise ValueError(f"results lack the base network of {sorted(set(missing))[:3]}")
    wide["baseB"] = [base_acc[k] for k in keys]
    wide.columns.name = None
    return wide


def accuracy_table(units: pd.DataFrame) -> pd.DataFrame:
    """Mean and CI of each treatment at each n (baseB at n = 0), per split kind."""
    rows = []
    treatments = [t for t in ("BnB", "BnB+", "AnB", "AnB+", "RnB") if t in units]
    for kind, g in units.groupby("split_kind"):
        base = g.drop_duplicates(UNIT)["baseB"]
        rows.append({"split_kind": kind, "treatment": "baseB", "n": 0, **mean_ci(base)})
        for t in treatments:
            for n, gn in g.groupby("n"):
                if gn[t].notna().any():
                    rows.append({"split_kind": kind, "treatment": t, "n": n, **mean_ci(gn[t])})
    return pd.DataFrame(rows)


def gap_table(units: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind, g in units.groupby("split_kind"):
        for name, (a, b) in GAPS.items():
            if a not in g or b not in g:
                continue
            for n, gn in g.groupby("n"):
                d = gn[a] - gn[b]
                if d.notna().any():
                    rows.append({"split_kind": kind, "gap": name, "n": n, **mean_ci(d)})
    return pd.DataFrame(rows)


def table1(units: pd.DataFrame, num_layers: int) -> pd.DataFrame:
    """The paper's Table 1: AnB+ over baseB and over BnB+, pooled over a range of cuts."""
    top = num_layers - 1
    ranges = {
        "all": (1, top),
        "upper_half": (math.ceil(num_layers / 2), top),
        "top": (top, top),
    }
    rows = []
    if "AnB+" not in units:
        return pd.DataFrame(rows)
    for kind, g in units.groupby("split_kind"):
        for label, (lo, hi) in ranges.items():
            sel = g[(g.n >= lo) & (g.n <= hi)]
            row = {"split_kind": kind, "cuts": label, "n_from": lo, "n_to": hi}
            for ref in ("baseB", "BnB+"):
                if ref in sel:
                    stats_ = mean_ci(sel["AnB+"] - sel[ref])
                    key = "over_" + ref.replace("+", "_plus")
                    row |= {f"{key}_{k}": v for k, v in stats_.items()}
            rows.append(row)
    return pd.DataFrame(rows)


def _clean(v):
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else round(float(v), 6)
    return v.item() if isinstance(v, np.generic) else v


def _nest(df: pd.DataFrame, keys: list[str]) -> dict:
    """Rows → nested dicts keyed by `keys` (n as "n1", ...): what `dvc metrics show` reads."""
    out: dict = {}
    for r in df.to_dict("records"):
        d = out
        for k in keys[:-1]:
            d = d.setdefault(_key(k, r[k]), {})
        d[_key(keys[-1], r[keys[-1]])] = {
            k: _clean(v) for k, v in r.items() if k not in keys and k not in ("n_from", "n_to")
        }
    return out


def _key(name: str, value) -> str:
    return f"n{value}" if name == "n" else str(value)


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


def analyse(runs_path: Path, out_dir: Path, num_layers: int) -> dict:
    """Write accuracy.csv, accuracy_by_n.csv, gaps.csv and summary.json; return the summary."""
    runs = read(runs_path)
    units = unit_table(runs)
    acc, gaps, t1 = accuracy_table(units), gap_table(units), table1(units, num_layers)
    out_dir = Path(out_dir)
    tables = {"accuracy.csv": acc, "accuracy_by_n.csv": wide_accuracy(acc), "gaps.csv": gaps}
    for name, df in tables.items():
        with atomic_write(out_dir / name) as f:
            df.to_csv(f, index=False, float_format="%.6f")
    bases = runs[runs.treatment == "base"]
    summary = {
        "networks": len(runs),
        "units": len(units.drop_duplicates(UNIT)),
        "base_test_acc_mean": _clean(bases.test_acc.mean()),
        "base_test_acc": {r.network: _clean(r.test_acc) for r in bases.itertuples()},
        "accuracy": _nest(acc, ["split_kind", "treatment", "n"]),
        "gaps": _nest(gaps, ["split_kind", "gap", "n"]),
        "table1": _nest(t1, ["split_kind", "cuts"]),
    }
    write_json(out_dir / "summary.json", summary)
    write_json(out_dir / "metrics.json", headline(summary))
    return summary


def headline(summary: dict) -> dict:
    """The few numbers `dvc metrics show` prints: base accuracy, mean gaps per cut, Table 1."""
    return {
        "networks": summary["networks"],
        "base_test_acc_mean": summary["base_test_acc_mean"],
        "gaps": {
            kind: {gap: {n: v["mean"] for n, v in by_n.items()} for gap, by_n in gaps.items()}
            for kind, gaps in summary["gaps"].items()
        },
        "table1": {
            kind: {
                cuts: {"over_baseB": v.get("over_baseB_mean"),
                       "over_BnB_plus": v.get("over_BnB_plus_mean")}
                for cuts, v in rows.items()
            }
            for kind, rows in summary["table1"].items()
        },
    }  # fmt: skip
