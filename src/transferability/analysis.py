"""Results → gaps, Table 1 and the paper's claims, decided by rules fixed before looking.

The unit of replication is the **block**: one (split, seed), holding both bases and both
directions. Networks inside a block are not independent (both directions share both bases; the
cuts of one direction share one baseB), so every statistic is first averaged inside a block
(over directions, and over cuts where a claim names a range) and only then given a Student-t
interval over blocks (df = blocks − 1). Paired differences stay paired inside the block.

No interval and no verdict comes from fewer blocks than `analysis.min_blocks` (random splits)
or `analysis.min_blocks_dissimilar`; nor does a co-adaptation or boost verdict come from bases
that have not converged (retraining the classifier on a base's frozen features, B(top)B, or
fine-tuning a copy of it, BnB+, gains more than the stated threshold): such a claim reads
``not testable`` with the reason in its ``rule``. Claims' estimates are in accuracy points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from transferability.config import TREATMENTS, AnalysisConfig
from transferability.io import atomic_write, write_json

UNIT = ["split", "split_kind", "seed", "direction"]
BLOCK = ["split", "split_kind", "seed"]
CLAIMS_COLUMNS = [
    "claim",
    "statistic",
    "estimate",
    "ci_low",
    "ci_high",
    "blocks",
    "verdict",
    "rule",
]

# name: (minuend, subtrahend), each a treatment column of the per-unit table
GAPS = {
    "co_adaptation": ("baseB", "BnB"),
    "specificity": ("BnB", "AnB"),
    "fine_tuning_benefit": ("AnB+", "AnB"),
    "transfer_boost": ("AnB+", "baseB"),
    "selffer_fine_tuning": ("BnB+", "baseB"),
    "random_frozen_drop": ("baseB", "RnB"),
}


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
    return pd.DataFrame(rows)


def accuracy_table(units: pd.DataFrame, rules: AnalysisConfig) -> pd.DataFrame:
    """Each treatment's accuracy at each n per split kind: the mean over blocks (tasks differ in
    difficulty, so no interval on it) and, with an interval, its difference from baseB."""
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
            }
        )
        for t in (t for t in TREATMENTS if t in g):
            for n in sorted(g.n.unique()):
                acc = block_values(g, lambda u, t=t: u[t], [n])
                if len(acc):
                    rel = interval(block_values(g, diff(t, "baseB"), [n]), rules.confidence, need)
                    rows.append(
                        {
                            "split_kind": kind,
                            "treatment": t,
                            "n": n,
                            "mean": acc.mean(),
                            **_prefixed("vs_base", rel),
                        }
                    )
    return pd.DataFrame(rows)


def _prefixed(prefix: str, d: dict) -> dict:
    return {(k if k == "blocks" else f"{prefix}_{k}"): v for k, v in d.items()}


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
    each block, then over blocks."""
    rows = []
    for kind, g in units.groupby("split_kind"):
        for label, (lo, hi) in table1_ranges(num_layers).items():
            row = {"split_kind": kind, "cuts": label, "n_from": lo, "n_to": hi}
            for ref, key in (("baseB", "over_baseB"), ("BnB+", "over_BnB_plus")):
                s = interval(
                    block_values(g, diff("AnB+", ref), range(lo, hi + 1)),
                    rules.confidence,
                    min_blocks(kind, rules),
                )
                row |= {f"{key}_{k}": v for k, v in s.items()}
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- claims


def _claim(claim, statistic, s, verdict, rule, scale=100.0) -> dict:
    pts = {k: s[k] * scale for k in ("estimate", "ci_low", "ci_high")}
    return {
        "claim": claim,
        "statistic": statistic,
        **pts,
        "blocks": s["blocks"],
        "verdict": verdict,
        "rule": rule,
    }


def sign_verdict(s: dict) -> str:
    """supported: the interval lies above 0; contradicted: below; else inconclusive."""
    if s["ci_low"] > 0:
        return "supported"
    if s["ci_high"] < 0:
        return "contradicted"
    return "inconclusive"


def claims(units: pd.DataFrame, num_layers: int, rules: AnalysisConfig) -> pd.DataFrame:
    """The paper's claims, one pre-specified test each (see the module docstring)."""
    rnd = units[units.split_kind == "random"]
    dis = units[units.split_kind == "dissimilar"]
    conf, need, m = rules.confidence, rules.min_blocks, rules.equivalence_margin / 100
    top = num_layers - 1
    middle = list(range(2, top)) or [1]
    lo3 = table1_ranges(num_layers)["upper_half"][0]
    few = f"not testable: fewer than {need} random-split blocks"
    rows = []

    def gate(s: dict, rule: str, converged: str | None = None):
        if s["blocks"] < need:
            return "not testable", f"{few} ({s['blocks']}); {rule}"
        if converged:
            return "not testable", f"{converged}; {rule}"
        return None

    # convergence of the bases: the checks that co-adaptation and boost verdicts rest on
    top_gain = interval(block_values(rnd, diff("BnB", "baseB"), [top]), conf, need)
    plus_gain = interval(block_values(rnd, diff("BnB+", "baseB"), range(1, top + 1)), conf, need)
    unconverged = []
    for name, s, limit, what in (
        ("converged_top_selffer", top_gain, rules.converged_max_gain, f"B{top}B − baseB"),
        ("converged_selffer_plus", plus_gain, rules.selffer_max_gain, f"BnB+ − baseB, n=1..{top}"),
    ):
        rule = f"check: the mean of {what} over blocks is at most {limit:g} points"
        if s["blocks"] < need:
            verdict = "not testable"
            rule = f"{few} ({s['blocks']}); {rule}"
        else:
            verdict = "supported" if s["estimate"] * 100 <= limit else "contradicted"
            if verdict == "contradicted":
                unconverged.append(f"{what} = {s['estimate'] * 100:+.2f} > {limit:g} points")
        rows.append(_claim(name, what, s, verdict, rule))
    not_converged = (
        "not testable: the bases have not converged (" + "; ".join(unconverged) + ")"
        if unconverged
        else None
    )

    # 1. first-layer features are general: an equivalence test (TOST) at margin m
    s1 = interval(block_values(rnd, diff("BnB", "AnB"), [1]), 1 - 2 * (1 - conf), need)
    rule = (
        f"equivalence (TOST, two one-sided 5% tests) at ±{rules.equivalence_margin:g} points, "
        f"the margin set from the 0.6-point seed-to-seed spread of one network: supported if "
        f"the {100 * (2 * conf - 1):.0f}% interval of BnB − AnB at n=1 lies inside ±margin and "
        "contains 0; contradicted if it lies wholly outside; else inconclusive"
    )
    if not (g := gate(s1, rule)):
        inside = -m < s1["ci_low"] and s1["ci_high"] < m
        if inside and s1["ci_low"] <= 0 <= s1["ci_high"]:
            g = ("supported", rule)
        elif s1["ci_low"] >= m or s1["ci_high"] <= -m:
            g = ("contradicted", rule)
        else:
            g = ("inconclusive", rule)
    rows.append(_claim("first_layer_general", "BnB − AnB at n=1", s1, *g))

    # 2. co-adaptation in the middle: baseB − BnB over the middle cuts, fixed in advance
    what = f"baseB − BnB, n={middle[0]}..{middle[-1]}"
    s2 = interval(block_values(rnd, diff("baseB", "BnB"), middle), conf, need)
    rule = "supported if the interval of the block means lies above 0, contradicted if below"
    g = gate(s2, rule, not_converged) or (sign_verdict(s2), rule)
    rows.append(_claim("coadaptation_middle", what, s2, *g))

    # 3. specificity grows with n: spec(top) − spec(1), paired inside each block
    spec = diff("BnB", "AnB")
    s3 = interval(_paired(rnd, spec, [top], [1]), conf, need)
    rule = f"supported if the interval of spec(n={top}) − spec(n=1) lies above 0"
    g = gate(s3, rule) or (sign_verdict(s3), rule)
    rows.append(_claim("specificity_grows", f"spec(n={top}) − spec(n=1)", s3, *g))

    # 4. fine-tuning recovers: AnB+ ≥ baseB − m at every n (an intersection-union test)
    one_sided = 1 - 2 * (1 - conf)
    per_n = {
        n: interval(block_values(rnd, diff("AnB+", "baseB"), [n]), one_sided, need)
        for n in range(1, top + 1)
    }
    worst_n = min(per_n, key=lambda n: (per_n[n]["ci_low"], per_n[n]["estimate"]))
    s4 = per_n[worst_n] if per_n else interval([], conf)
    rule = (
        f"supported if at every n=1..{top} the one-sided 95% lower bound of AnB+ − baseB is above "
        f"−{rules.equivalence_margin:g} points; contradicted if at some n its upper bound is "
        f"below; the row shows the worst cut (n={worst_n}, 90% interval)"
    )
    s4 = {**s4, "blocks": min(s["blocks"] for s in per_n.values())}
    if not (g := gate(s4, rule)):
        if all(s["ci_low"] > -m for s in per_n.values()):
            g = ("supported", rule)
        elif any(s["ci_high"] < -m for s in per_n.values()):
            g = ("contradicted", rule)
        else:
            g = ("inconclusive", rule)
    rows.append(_claim("finetune_recovers", f"AnB+ − baseB at the worst n ({worst_n})", s4, *g))

    # 5, 6. the boost (Table 1, all cuts): over baseB, and over the selffer control BnB+
    t1 = table1(rnd, num_layers, rules).set_index("cuts") if len(rnd) else None
    for name, key, what in (
        ("boost_over_base", "over_baseB", f"AnB+ − baseB, n=1..{top}"),
        ("boost_over_selffer", "over_BnB_plus", f"AnB+ − BnB+, n=1..{top}"),
    ):
        s = (
            {k: t1.loc["all", f"{key}_{k}"] for k in ("estimate", "ci_low", "ci_high", "blocks")}
            if t1 is not None
            else interval([], conf)
        )
        s["blocks"] = int(s["blocks"])
        rule = "Table 1's first row: supported if the interval lies above 0, contradicted if below"
        g = gate(s, rule, not_converged) or (sign_verdict(s), rule)
        rows.append(_claim(name, what, s, *g))

    # 7. transfer from a dissimilar task is worse: normalised AnB, dissimilar vs random blocks
    rel_drop = lambda u: 1 - normalised("AnB")(u)  # noqa: E731
    d_dis = block_values(dis, rel_drop, range(1, top + 1))
    d_rnd = block_values(rnd, rel_drop, range(1, top + 1))
    need_d = rules.min_blocks_dissimilar
    s7 = {
        "estimate": d_dis.mean() - d_rnd.mean() if len(d_dis) and len(d_rnd) else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "blocks": len(d_dis),
    }
    rule = (
        f"normalised drop 1 − (AnB − chance)/(baseB − chance), mean over n=1..{top}: supported if "
        "Welch's interval of dissimilar − random blocks lies above 0, contradicted if below"
    )
    if len(d_dis) < need_d or len(d_rnd) < need:
        g = (
            "not testable",
            f"not testable: {len(d_dis)} dissimilar blocks (need {need_d}) and "
            f"{len(d_rnd)} random-split blocks (need {need}); {rule}",
        )
    else:
        ci = stats.ttest_ind(d_dis, d_rnd, equal_var=False).confidence_interval(conf)
        s7["ci_low"], s7["ci_high"] = float(ci.low), float(ci.high)
        g = (sign_verdict(s7), rule)
    rows.append(_claim("dissimilar_worse", "normalised AnB drop, dissimilar − random", s7, *g))

    # 8. random frozen layers do worse than transferred frozen ones at n ≥ lo3
    cut = range(max(3, lo3) if top >= 3 else top, top + 1)
    s8 = interval(
        block_values(rnd, lambda u: normalised("AnB")(u) - normalised("RnB")(u), cut), conf, need
    )
    rule = (
        f"normalised (acc − chance)/(baseB − chance), mean over n={cut.start}..{top}: supported "
        "if the interval of AnB − RnB lies above 0, contradicted if below"
    )
    g = gate(s8, rule) or (sign_verdict(s8), rule)
    rows.append(_claim("random_frozen_collapse", "normalised AnB − RnB", s8, *g))
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS)


# ---------------------------------------------------------------------- beyond the paper


def with_per_class(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with the training images per class of each network (`per_class`)."""
    return runs.assign(per_class=(runs.train_images / runs.num_classes).round().astype(int))


def datasize_units(
    runs: pd.DataFrame, sweep: pd.DataFrame, cuts: list[int], directions=None
) -> pd.DataFrame:
    """The target-size sweep as per-unit rows (as `unit_table`, plus `per_class`): baseB, BnB+
    and AnB+ at each size, for the sweep's blocks; the study's own size comes from the study's
    rows (`runs`). At each size, a block lacking a direction (`directions`, or all the rows
    hold) or the base of its target (a base that failed) is left out."""
    sweep = with_per_class(sweep)
    blocks = pd.MultiIndex.from_frame(sweep[["split", "seed"]].drop_duplicates())
    own = with_per_class(runs)
    own = own[
        pd.MultiIndex.from_frame(own[["split", "seed"]]).isin(blocks)
        & (own.treatment.isin(["BnB+", "AnB+"]) & own.n.isin(cuts) | (own.treatment == "base"))
    ]
    study_size = own[own.treatment != "base"].per_class
    # the study's own size is a point of the sweep only if the study trained every sweep cut
    whole = set(cuts) <= set(own.n)
    own = (
        own.assign(per_class=int(study_size.iloc[0])) if whole and len(study_size) else own.iloc[:0]
    )
    out = []
    want = directions or sorted(set(sweep.direction) - {""})
    rows = pd.concat([sweep, own])
    for size, g in rows.groupby("per_class"):
        key = ["split", "seed", "target_task"]
        based = pd.MultiIndex.from_frame(g[key]).isin(
            pd.MultiIndex.from_frame(g.loc[g.treatment == "base", key])
        )
        g = g[based]
        if (g.treatment != "base").any():
            units, _ = complete_blocks(unit_table(g), want)
            out.append(units.assign(per_class=size))
    du = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["per_class", "n"])
    du.attrs["sizes"] = sorted(int(x) for x in set(rows.per_class))  # every size trained
    return du


DATASIZE_BOOSTS = {"over_baseB": "baseB", "over_BnB_plus": "BnB+"}


def datasize_table(du: pd.DataFrame, rules: AnalysisConfig) -> pd.DataFrame:
    """AnB+ over baseB and over BnB+ at each target size: at each sweep cut and averaged over
    them ("mean"), block means and their interval."""
    rows = []
    for size, g in du.groupby("per_class"):
        cuts = sorted(g.n.unique())
        for label, sel in [*((f"n{n}", [n]) for n in cuts), ("mean", cuts)]:
            for key, ref in DATASIZE_BOOSTS.items():
                s = interval(
                    block_values(g, diff("AnB+", ref), sel), rules.confidence, rules.min_blocks
                )
                rows.append({"per_class": size, "cuts": label, "boost": key, **s})
    return pd.DataFrame(
        rows, columns=["per_class", "cuts", "boost", "estimate", "ci_low", "ci_high", "blocks"]
    )


def datasize_claim(du: pd.DataFrame | None, rules: AnalysisConfig) -> dict:
    """boost_shrinks_with_data: AnB+ − BnB+ (the boost over the selffer control), mean over the
    sweep's cuts, at the smallest target size minus at the largest, paired inside each block."""
    rule = (
        "AnB+ − BnB+, mean over the sweep's cuts, smallest target size minus largest, paired per "
        "block: supported if the interval lies above 0, contradicted if below; no convergence "
        "gate: BnB+ copies a base trained on the same set and trains as long as AnB+, so extra "
        "training cannot explain the difference"
    )
    name, what = "boost_shrinks_with_data", "boost over BnB+: smallest − largest target size"
    none = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "blocks": 0}
    sizes = du.attrs.get("sizes", []) if du is not None else []
    if len(sizes) < 2:
        return _claim(
            name, what, none, "not testable", f"not testable: no target-size sweep; {rule}"
        )
    # the smallest and the largest size trained, whatever has finished at each
    lo, hi = sizes[0], sizes[-1]
    rule = f"{lo} vs {hi} images per class; {rule}"
    cuts = sorted(du.n.unique())
    at = du.groupby("per_class").n.agg(set)
    if set(at.get(lo, ())) != set(cuts) or set(at.get(hi, ())) != set(cuts):
        why = f"not testable: sizes {lo} and {hi} lack a whole block at every cut {cuts}"
        return _claim(name, what, none, "not testable", f"{why}; {rule}")
    boost = diff("AnB+", "BnB+")
    d = (
        block_values(du[du.per_class == lo], boost, cuts)
        - block_values(du[du.per_class == hi], boost, cuts)
    ).dropna()
    s = interval(d, rules.confidence, rules.min_blocks)
    if s["blocks"] < rules.min_blocks:
        few = f"not testable: fewer than {rules.min_blocks} random-split blocks ({s['blocks']})"
        return _claim(name, what, s, "not testable", f"{few}; {rule}")
    return _claim(name, what, s, sign_verdict(s), rule)


def gram(x) -> np.ndarray:
    """The centred Gram matrix (n × n, float64) of a representation (n examples × features)."""
    x = centred(x)
    return x @ x.T


def cka_from_grams(k: np.ndarray, m: np.ndarray) -> float:
    """Linear CKA from two centred Gram matrices: <K, M>_F / (‖K‖_F ‖M‖_F); nan when either is
    (numerically) zero, i.e. a representation constant over the examples."""
    denom = np.linalg.norm(k) * np.linalg.norm(m)
    return float(np.vdot(k, m) / denom) if denom > 0 else math.nan


def centred(x) -> np.ndarray:
    """Each feature minus its mean over the examples (float64); exactly zero for a feature
    that is constant up to rounding (relative 1e-12), so that a constant representation gives
    CKA nan rather than the ratio of two rounding errors."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    c = x - x.mean(axis=0, keepdims=True)
    c[:, np.abs(c).max(axis=0) <= 1e-12 * np.abs(x).max(axis=0)] = 0.0
    return c


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n examples
    (n × p and n × q), in float64: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) after centring each feature.
    1 for a representation and itself; invariant to orthogonal transforms and isotropic
    scaling of either; nan when either is constant."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same examples: {len(x)} and {len(y)} rows")
    if max(x.shape[1], y.shape[1]) > len(x):  # wide: the n × n form is cheaper
        return cka_from_grams(gram(x), gram(y))
    x, y = centred(x), centred(y)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denom) if denom > 0 else math.nan


CKA_COLUMNS = ["split", "seed", "direction", "comparison", "n", "layer", "cka", "images"]


def cka_table(cka: pd.DataFrame, rules: AnalysisConfig, directions=None) -> pd.DataFrame:
    """CKA per comparison, cut and layer: averaged over the directions inside each block (a
    block lacking one gives no number), then the mean over blocks and its interval."""
    rows = []
    cka = cka.assign(direction=cka.direction.astype(object).fillna(""))  # "" reads back as nan
    for (comp, n, layer), g in cka.groupby(["comparison", "n", "layer"]):
        want = set(cka[cka.comparison == comp].direction)
        if directions and want != {""}:
            want = set(directions)
            g = g[g.direction.isin(want)]
        size = len(want)
        per = g.groupby(["split", "seed"]).cka.agg(
            lambda v, w=size: v.mean() if len(v) == w and v.notna().all() else math.nan
        )
        s = interval(per.dropna(), rules.confidence, rules.min_blocks)
        images = int(g.images.max()) if "images" in g and g.images.notna().any() else None
        rows.append({"comparison": comp, "n": n, "layer": layer, **s, "images": images})
    return pd.DataFrame(
        rows,
        columns=["comparison", "n", "layer", "estimate", "ci_low", "ci_high", "blocks", "images"],
    )


def _paired(units: pd.DataFrame, value, cuts_a, cuts_b) -> pd.Series:
    """value(cuts_a) − value(cuts_b) inside each block."""
    a, b = block_values(units, value, cuts_a), block_values(units, value, cuts_b)
    if a.empty or b.empty:  # a cut the study did not train
        return pd.Series(dtype=float)
    return (a - b).dropna()


# ---------------------------------------------------------------------- writing


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
        chosen = pilot[pilot.chosen.astype(bool)]
        if len(chosen):
            out["pilot_chosen"] = [int(chosen.iloc[0].per_class), int(chosen.iloc[0].epochs)]
        here = pilot[(pilot.per_class == per_class) & (pilot.epochs == epochs)]
        out["converged"] = bool(here.converged.astype(bool).iloc[0]) if len(here) else None
        out["seed_sd"] = float(pilot.seed_sd.iloc[0])
    return out


def analyse(
    runs_path: Path,
    out_dir: Path,
    num_layers: int,
    rules: AnalysisConfig,
    pilot_path: Path | None = None,
    planned: int | None = None,
    directions: list[str] | None = None,
    sweep_path: Path | None = None,
    cka_path: Path | None = None,
    recipe: dict | None = None,
) -> dict:
    """Write accuracy.csv, accuracy_by_n.csv, gaps.csv, table1.csv, claims.csv, datasize.csv,
    cka_summary.csv, summary.json and metrics.json; return the summary. With the pilot's
    budgets table, the summary says whether the study's budget is one the pilot found
    converged; with the target-size sweep's rows (`sweep_path`) and the layer similarities
    (`cka_path`), the work beyond the paper is summarised too (else its tables are empty).
    `recipe` (the training settings the networks were trained with) is passed on to the report."""
    runs = read(runs_path)
    units, partial = complete_blocks(unit_table(runs), directions)
    if units.empty:
        raise ValueError(
            f"no block in {runs_path} has every direction yet, nothing to analyse "
            f"(blocks in progress: {', '.join(partial)})"
        )
    acc, gaps = accuracy_table(units, rules), gap_table(units, rules)
    t1, cl = table1(units, num_layers, rules), claims(units, num_layers, rules)
    du = None
    if sweep_path and Path(sweep_path).is_file():
        sweep = read(sweep_path)
        cuts = sorted(set(sweep.n) - {0})
        du = datasize_units(runs, sweep, cuts, directions) if len(sweep) else None
    ds = datasize_table(du if du is not None else pd.DataFrame(columns=["per_class"]), rules)
    cl = pd.concat([cl, pd.DataFrame([datasize_claim(du, rules)])], ignore_index=True)
    cka = pd.read_csv(cka_path) if cka_path and Path(cka_path).is_file() else None
    ck = cka_table(cka if cka is not None else pd.DataFrame(columns=CKA_COLUMNS), rules, directions)
    out_dir = Path(out_dir)
    tables = {
        "accuracy.csv": acc,
        "accuracy_by_n.csv": wide_accuracy(acc),
        "gaps.csv": gaps,
        "table1.csv": t1,
        "claims.csv": cl,
        "datasize.csv": ds,
        "cka_summary.csv": ck,
    }
    for name, df in tables.items():
        with atomic_write(out_dir / name) as f:
            df.to_csv(f, index=False, float_format="%.6f")
    bases = runs[runs.treatment == "base"]
    blocks = units.drop_duplicates(BLOCK)
    summary = {
        "networks": len(runs),
        "planned_networks": planned,  # the configured study's size: fewer rows = still running
        "units": len(units.drop_duplicates(UNIT)),
        "blocks": {k: int(v) for k, v in blocks.split_kind.value_counts().items()},
        "blocks_in_progress": partial,  # left out: a block counts with every direction only
        "rules": rules.model_dump(),
        "recipe": recipe or {},
        "budget": budget_regime(
            runs, pd.read_csv(pilot_path) if pilot_path and Path(pilot_path).is_file() else None
        ),
        "base_test_acc_mean": _clean(bases.test_acc.mean()),
        "base_test_acc": {r.network: _clean(r.test_acc) for r in bases.itertuples()},
        "accuracy": _nest(acc, ["split_kind", "treatment", "n"]),
        "gaps": _nest(gaps, ["split_kind", "gap", "n"]),
        "table1": _nest(t1, ["split_kind", "cuts"]),
        "claims": {
            r["claim"]: {k: _clean(v) for k, v in r.items() if k != "claim"}
            for r in cl.to_dict("records")
        },
        "datasize": _nest(ds, ["boost", "per_class", "cuts"]),
        "cka": _nest(ck.assign(n=ck.n.astype(int)), ["comparison", "n", "layer"])
        if len(ck)
        else {},
    }
    write_json(out_dir / "summary.json", summary)
    write_json(out_dir / "metrics.json", headline(summary))
    return summary


def headline(summary: dict) -> dict:
    """The few numbers `dvc metrics show` prints: base accuracy, gaps per cut, Table 1, claims."""
    return {
        "networks": summary["networks"],
        "blocks": summary["blocks"],
        "base_test_acc_mean": summary["base_test_acc_mean"],
        "gaps": {
            kind: {gap: {n: v["estimate"] for n, v in by_n.items()} for gap, by_n in gaps.items()}
            for kind, gaps in summary["gaps"].items()
        },
        "table1": {
            kind: {
                cuts: {
                    "over_baseB": v.get("over_baseB_estimate"),
                    "over_BnB_plus": v.get("over_BnB_plus_estimate"),
                }
                for cuts, v in rows.items()
            }
            for kind, rows in summary["table1"].items()
        },
        "claims": {k: v["verdict"] for k, v in summary["claims"].items()},
    }


# ---------------------------------------------------------------------- convergence pilot


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
