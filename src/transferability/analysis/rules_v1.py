"""Rules v1: the claims as registered before the reference study ran (kept unchanged).

The committed reference study was registered under these rules; the report shows its verdicts
under them beside the verdicts of rules v2 (`claims.py`), which are post hoc for that study.
Nothing here is used to decide a new study.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from transferability.analysis.blocks import (
    block_values,
    diff,
    interval,
    normalised,
    paired,
    table1,
    table1_ranges,
)
from transferability.config import AnalysisConfig

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
    s3 = interval(paired(rnd, spec, [top], [1]), conf, need)
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
