"""Rules v2: the paper's claims as a registry of small functions, one shared gate, and verdicts
that say how big an effect is against the size that matters.

Registered on 2026-12-01 (`REGISTERED`), before the whole-task study's first transfer network
trained; the reference study, which ran under rules v1 (`rules_v1.py`), is judged by these
rules post hoc.

Each claim names its estimand (a statistic of block values, `statistic`), the finding of the
paper (`finding`), the paper's size of the same statistic (`analysis/paper.py`) and a smallest
effect size of interest δ (`analysis.sesoi`: half the paper's size). Its verdict combines the
test against 0 with an equivalence test against ±δ (Lakens, Scheel and Isager 2018), at level
α = 1 − `analysis.confidence`:

- an *effect* claim (the paper found an effect in a direction) reads **reproduced** when the
  effect differs from 0 in the paper's direction and is not shown smaller than δ; **smaller
  than the paper's** when it differs from 0 in that direction but lies inside ±δ; **absent**
  when it lies inside ±δ and does not differ from 0; **reversed** when it differs from 0 in
  the other direction; else **inconclusive**;
- an *equivalence* claim (the paper found no difference) reads **reproduced** when the effect
  lies inside ±δ (TOST), **contradicted** when it lies beyond ±δ, else **inconclusive**;
- a *non-inferiority* claim (the paper found no loss at any cut) reads **reproduced** when at
  every cut the loss is shown smaller than δ (an intersection–union test), **contradicted**
  when at some cut it is shown larger (Bonferroni over the cuts), else **inconclusive**.

Claims in the "beyond" family say *supported* where a paper claim says *reproduced*. The
"diagnostics" family (beyond the paper, part 2: one statement per diagnostic of diagnostics.py,
registered before any diagnostic ran) reads the same way; its claims are listed only once the
diagnostics' table exists (`Claim.needs`), so that without it every other row is as before.

Gates are checks, not claims. A claim measured against baseB is **not testable** unless every
gate passed: the bases converged (the top-cut selffer B(top)B gains less than
`analysis.converged_max_gain` over baseB: the one-sided upper bound lies below it), fine-tuning
a copy for the same schedule gains a negligible amount (BnB+ − baseB, mean over cuts: the
one-sided upper bound lies below the boost's δ; else training length, not transfer, may explain
a boost over baseB), and the convergence pilot did not find the study's budget unconverged (the
pilot's own rule, registered with it: a doubling gains less than the seed-to-seed SD). No claim
is tested on fewer than `analysis.min_blocks` random blocks (`min_blocks_dissimilar`
dissimilar ones). Intervals are shown at 1 − α; the equivalence, non-inferiority and gate
decisions read the 1 − 2α interval (`tost_low`, `tost_high`: its ends are one-sided bounds).

Each family of claims (the paper's; beyond the paper) is one Holm family: both tests of every
testable claim (a claim that is not testable is not a member), adjusted by Holm's step-down
procedure with Shaffer's cap (of a claim's two null hypotheses, "no effect" and "an effect of
at least δ", at most one is true, so at most m of the 2m are). Holm's procedure holds the
family-wise error at α under any dependence between claims that share networks. The adjusted
verdict may weaken a raw verdict to *inconclusive*, never strengthen it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transferability.analysis.blocks import block_values, diff, normalised, paired
from transferability.analysis.diagnostics import column, reinit_contrast, with_diagnostics
from transferability.analysis.inference import NONE, Estimate, holm, one_sample, slope, welch
from transferability.config import AnalysisConfig

REGISTERED = "2026-12-01"
COLUMNS = [
    "claim",
    "family",
    "finding",
    "statistic",
    "paper",
    "delta",
    "estimate",
    "ci_low",
    "ci_high",
    "tost_low",
    "tost_high",
    "blocks",
    "p_effect",
    "p_negligible",
    "verdict",
    "p_effect_holm",
    "p_negligible_holm",
    "verdict_holm",
    "estimate_without_failed",
    "blocks_without_failed",
    "rule",
]
GATE_COLUMNS = ["gate", "statistic", "estimate", "ci_low", "ci_high", "blocks", "limit", "status"]


@dataclass
class Context:
    """What the claims read: the per-unit table of complete blocks of each split kind, and the
    facts about the study that gates and the dose–response need."""

    random: pd.DataFrame
    dissimilar: pd.DataFrame
    num_layers: int
    rules: AnalysisConfig
    # split name → how unevenly it divides the dissimilar split's task-A classes between A and B
    imbalance: dict[str, float] = field(default_factory=dict)
    dissimilar_imbalance: float | None = None
    datasize: pd.DataFrame | None = None  # the target-size sweep's units (beyond the paper)
    diagnostics: pd.DataFrame | None = None  # the diagnostics' table (beyond the paper, part 2)

    @property
    def top(self) -> int:
        return self.num_layers - 1

    def points(self, units: pd.DataFrame, value, cuts) -> pd.Series:
        return 100 * block_values(units, value, cuts)


@dataclass
class Measured:
    statistic: str
    estimate: Estimate
    per_cut: dict[int, Estimate] | None = None  # non-inferiority: every cut's estimate
    needs_dissimilar: bool = False
    why_not: str = ""  # not testable for a reason of its own


@dataclass(frozen=True)
class Claim:
    name: str
    finding: str
    kind: str  # effect | equivalence | noninferiority
    measure: Callable[[Context], Measured]
    against_base: bool = False
    family: str = "paper"
    needs: str = ""  # a Context field without which the claim is not listed at all


REGISTRY: dict[str, Claim] = {}


def claim(
    name: str, finding: str, kind: str = "effect", against_base=False, family="paper", needs=""
):
    def register(fn):
        REGISTRY[name] = Claim(name, finding, kind, fn, against_base, family, needs)
        return fn

    return register


# ---------------------------------------------------------------------- the paper's claims


@claim(
    "first_layer_general",
    "first-layer features are general: no specificity at n = 1",
    "equivalence",
)
def _first_layer(c: Context) -> Measured:
    return Measured("BnB − AnB at n=1", one_sample(c.points(c.random, diff("BnB", "AnB"), [1])))


@claim(
    "coadaptation_middle",
    "fragile co-adaptation: BnB falls below baseB at the middle cuts",
    against_base=True,
)
def _coadaptation(c: Context) -> Measured:
    middle = list(range(2, c.top)) or [1]
    values = c.points(c.random, diff("baseB", "BnB"), middle)
    return Measured(f"baseB − BnB, n={middle[0]}..{middle[-1]}", one_sample(values))


@claim("specificity_grows", "specificity grows with n: AnB falls below BnB towards the top")
def _specificity(c: Context) -> Measured:
    values = 100 * paired(c.random, diff("BnB", "AnB"), [c.top], [1])
    return Measured(f"spec(n={c.top}) − spec(n=1)", one_sample(values))


@claim(
    "finetune_recovers",
    "fine-tuning recovers: AnB+ is no worse than baseB at any cut",
    "noninferiority",
    against_base=True,
)
def _recovers(c: Context) -> Measured:
    delta = c.rules.sesoi["finetune_recovers"]
    per_cut = {
        n: one_sample(c.points(c.random, diff("AnB+", "baseB"), [n])) for n in range(1, c.top + 1)
    }
    if not all(e.testable for e in per_cut.values()):
        return Measured("AnB+ − baseB at every cut", NONE, per_cut)
    # the cut that decides: the one least clearly above −δ
    worst = max(per_cut, key=lambda n: per_cut[n].p_above(-delta))
    return Measured(f"AnB+ − baseB at the deciding cut (n={worst})", per_cut[worst], per_cut)


@claim(
    "boost_over_base",
    "transfer boosts generalisation: AnB+ beats baseB (the paper's Table 1, all cuts)",
    against_base=True,
)
def _boost_base(c: Context) -> Measured:
    values = c.points(c.random, diff("AnB+", "baseB"), range(1, c.top + 1))
    return Measured(f"AnB+ − baseB, n=1..{c.top}", one_sample(values))


@claim(
    "boost_over_selffer",
    "the boost is transfer, not training length: AnB+ beats BnB+ (the paper's Table 1, all cuts)",
)
def _boost_selffer(c: Context) -> Measured:
    values = c.points(c.random, diff("AnB+", "BnB+"), range(1, c.top + 1))
    return Measured(f"AnB+ − BnB+, n=1..{c.top}", one_sample(values))


def _relative_drop(u: pd.DataFrame) -> pd.Series:
    return 1 - normalised("AnB")(u)


@claim("dissimilar_worse", "features transfer worse from a dissimilar task")
def _dissimilar(c: Context) -> Measured:
    cuts = range(1, c.top + 1)
    dis, rnd = (
        c.points(c.dissimilar, _relative_drop, cuts),
        c.points(c.random, _relative_drop, cuts),
    )
    return Measured(
        "normalised AnB drop, dissimilar − random", welch(dis, rnd), needs_dissimilar=True
    )


@claim(
    "dissimilar_dose_response",
    "… and the more a split separates the dissimilar groups, the worse transfer",
)
def _dose(c: Context) -> Measured:
    what = "normalised AnB drop against group separation: slope from 0 to 1"
    if not c.imbalance or c.dissimilar_imbalance is None:
        return Measured(what, NONE, why_not="no dissimilar grouping of the classes configured")
    drop = c.points(c.random, _relative_drop, range(1, c.top + 1))
    x = [c.imbalance.get(split, math.nan) for split, _, _ in drop.index]
    fit = slope(x, drop.to_numpy())
    if len(set(x)) < 2 and len(x) >= 3:
        return Measured(what, fit, why_not="the random splits do not vary in group separation")
    return Measured(what, fit)


@claim(
    "random_frozen_collapse",
    "random frozen layers do far worse than transferred ones (n ≥ 3)",
)
def _random_frozen(c: Context) -> Measured:
    lo = max(3, round(3 * c.num_layers / 8)) if c.top >= 3 else c.top
    values = c.points(
        c.random, lambda u: normalised("AnB")(u) - normalised("RnB")(u), range(lo, c.top + 1)
    )
    return Measured(f"normalised AnB − RnB, n={lo}..{c.top}", one_sample(values))


# ---------------------------------------------------------------------- beyond the paper


@claim(
    "boost_shrinks_with_data",
    "the boost over the selffer shrinks as the target set grows",
    family="beyond",
)
def _shrinks(c: Context) -> Measured:
    what = "boost over BnB+: smallest − largest target size"
    du = c.datasize
    sizes = du.attrs.get("sizes", []) if du is not None else []
    if len(sizes) < 2:
        return Measured(what, NONE, why_not="no target-size sweep")
    lo, hi = sizes[0], sizes[-1]
    cuts = sorted(du.n.unique())
    at = du.groupby("per_class").n.agg(set)
    if set(at.get(lo, ())) != set(cuts) or set(at.get(hi, ())) != set(cuts):
        return Measured(what, NONE, why_not=f"sizes {lo} and {hi} lack a whole block at {cuts}")
    boost = diff("AnB+", "BnB+")
    d = c.points(du[du.per_class == lo], boost, cuts) - c.points(
        du[du.per_class == hi], boost, cuts
    )
    return Measured(f"{what} ({lo} vs {hi} images/class)", one_sample(d.dropna()))


# ---------------------------------------------------------------------- the diagnostics
# beyond the paper, part 2 (diagnostics.py): one statement per diagnostic, each on the first
# `beyond.blocks` random blocks; listed once the diagnostics' table exists


def _diagnostic_cuts(c: Context, diagnostic: str) -> list[int]:
    d = c.diagnostics
    return sorted(set(d.n[d.diagnostic == diagnostic])) if d is not None else []


def _on_units(c: Context, name: str, what: str, cuts: list[int]) -> Measured:
    if not cuts:
        return Measured(what, NONE, why_not=f"no {name} rows in the diagnostics' table")
    units = with_diagnostics(c.random, c.diagnostics)
    return Measured(what, one_sample(c.points(units, column(name), cuts)))


@claim(
    "stitch_penalty_below_specificity",
    "at the middle cuts baseA's features serve baseB's own upper layers through an affine "
    "stitch at less cost than AnB's specificity gap: much of the gap is retraining, not "
    "unsuitable features",
    family="diagnostics",
    needs="diagnostics",
)
def _stitching(c: Context) -> Measured:
    middle = list(range(2, c.top)) or [1]
    what = f"(BnB − AnB) − (baseB − stitched), n={middle[0]}..{middle[-1]}"
    if not set(middle) <= set(_diagnostic_cuts(c, "stitching")):
        return Measured(what, NONE, why_not=f"no stitching rows at every cut of {middle}")
    units = with_diagnostics(c.random, c.diagnostics)
    gap = lambda u: diff("BnB", "AnB")(u) - column("stitch_penalty")(u)  # noqa: E731
    return Measured(what, one_sample(c.points(units, gap, middle)))


@claim(
    "reinit_first_layer_critical",
    "the first layer is critical and the top hidden layer robust: resetting layer 1 of a base to "
    "its initial weights costs more than resetting the last layer below the classifier",
    family="diagnostics",
    needs="diagnostics",
)
def _reinit(c: Context) -> Measured:
    what = f"drop on resetting layer 1 − layer {c.top} to its initial weights"
    values = 100 * reinit_contrast(c.diagnostics, 1, c.top)
    if values.empty:
        return Measured(what, NONE, why_not=f"no reinit rows of layers 1 and {c.top}")
    return Measured(what, one_sample(values))


@claim(
    "finetune_stays_in_source_basin",
    "fine-tuning stays in its source's basin: no loss barrier on the straight line from baseA's "
    "copied layers to AnB+'s",
    "equivalence",
    family="diagnostics",
    needs="diagnostics",
)
def _basin(c: Context) -> Measured:
    cuts = _diagnostic_cuts(c, "interpolation")
    what = f"barrier from AnB+ to its source, n={','.join(map(str, cuts))}"
    return _on_units(c, "barrier_source", what, cuts)


@claim(
    "reuse_beats_scale",
    "AnB+ owes its accuracy to reused features, not to their scale: it beats the same network "
    "started from random layers with baseA's per-channel mean and SD",
    family="diagnostics",
    needs="diagnostics",
)
def _transfusion(c: Context) -> Measured:
    cuts = _diagnostic_cuts(c, "transfusion")
    what = f"AnB+ − scale-matched start, n={','.join(map(str, cuts))}"
    return _on_units(c, "scale_gap", what, cuts)


# ---------------------------------------------------------------------- gates


def gates(c: Context, pilot_converged: bool | None) -> pd.DataFrame:
    """The checks that claims measured against baseB rest on: passed, failed or not checked."""
    r, alpha = c.rules, 1 - c.rules.confidence
    rows = []
    top = one_sample(c.points(c.random, diff("BnB", "baseB"), [c.top]))
    rows.append(
        _gate(
            "bases_converged",
            f"B{c.top}B − baseB (upper bound below the limit)",
            top,
            r.converged_max_gain,
            top.p_below(r.converged_max_gain) < alpha,
            r,
        )
    )
    delta = r.sesoi["boost_over_base"]
    plus = one_sample(c.points(c.random, diff("BnB+", "baseB"), range(1, c.top + 1)))
    rows.append(
        _gate(
            "selffer_negligible",
            f"BnB+ − baseB, n=1..{c.top} (upper bound below δ of boost_over_base)",
            plus,
            delta,
            plus.p_below(delta) < alpha,
            r,
        )
    )
    rows.append(
        {
            "gate": "pilot_converged",
            "statistic": "the convergence pilot's verdict on the study's budget",
            "estimate": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "blocks": 0,
            "limit": math.nan,
            "status": {True: "passed", False: "failed", None: "not checked"}[pilot_converged],
        }
    )
    return pd.DataFrame(rows, columns=GATE_COLUMNS)


def blocking(gate_table: pd.DataFrame) -> list[str]:
    """Why the claims measured against baseB cannot be tested: every failed gate, and every
    gate left unchecked but the pilot's (a study without a pilot rests on its own gates); an
    empty list when the gates pass."""
    return [gate_reason(g) for g in gate_table.itertuples() if g.status == "failed"] + [
        f"{g.gate} not checked"
        for g in gate_table.itertuples()
        if g.status == "not checked" and g.gate != "pilot_converged"
    ]


def gate_reason(g) -> str:
    """Why a failed gate blocks the claims measured against baseB, with its numbers."""
    if g.gate == "pilot_converged":
        return "the convergence pilot found the study's budget not converged"
    shown = f"{g.estimate:+.2f} [{g.ci_low:+.2f}, {g.ci_high:+.2f}]"
    if g.gate == "selffer_negligible":
        return (
            f"fine-tuning a copy of baseB for the same schedule gains {shown} points, not shown "
            f"below {g.limit:g}: training length, not transfer, may explain a gain over baseB"
        )
    return (
        f"retraining the classifier on the base's features gains {shown} points, not shown "
        f"below {g.limit:g}: the bases have not converged"
    )


def _gate(name, statistic, e: Estimate, limit, ok: bool, rules: AnalysisConfig) -> dict:
    lo, hi = e.interval(2 * rules.confidence - 1)  # its upper end: the one-sided bound
    status = "not checked" if e.blocks < rules.min_blocks else "passed" if ok else "failed"
    return {
        "gate": name,
        "statistic": statistic,
        "estimate": e.estimate,
        "ci_low": lo,
        "ci_high": hi,
        "blocks": e.blocks,
        "limit": limit,
        "status": status,
    }


# ---------------------------------------------------------------------- verdicts


def tests(kind: str, m: Measured, delta: float) -> tuple[float, float]:
    """(p_effect, p_negligible): small p_effect shows an effect (beyond 0 for an effect claim,
    beyond δ otherwise); small p_negligible shows it inside ±δ (or, for non-inferiority, a loss
    smaller than δ at every cut)."""
    e = m.estimate
    if kind == "effect":
        return e.p_zero, e.p_equivalent(delta)
    if kind == "equivalence":
        return e.p_beyond(delta), e.p_equivalent(delta)
    cuts = list((m.per_cut or {}).values())
    if not cuts or not all(x.testable for x in cuts):
        return math.nan, math.nan
    worse = min(1.0, len(cuts) * min(x.p_below(-delta) for x in cuts))
    return worse, max(x.p_above(-delta) for x in cuts)


def verdict(
    kind: str, p_effect: float, p_negligible: float, sign: float, alpha: float, family="paper"
) -> str:
    """The verdict from the two tests' p-values (see the module docstring)."""
    effect, negligible = p_effect < alpha, p_negligible < alpha
    yes = "reproduced" if family == "paper" else "supported"
    if kind == "effect":
        if effect and sign > 0:
            return "smaller than the paper's" if negligible else yes
        if effect:
            return "reversed"
        return "absent" if negligible else "inconclusive"
    if negligible:
        return yes
    return "contradicted" if effect else "inconclusive"


def adjusted(r, alpha: float) -> str:
    """The verdict read with Holm-adjusted p-values; where that reads otherwise than the raw
    verdict, "inconclusive": the adjustment may weaken a verdict, never strengthen it (losing
    the equivalence test must not turn "smaller than the paper's" into "reproduced")."""
    if r.verdict == "not testable":
        return r.verdict
    v = verdict(
        REGISTRY[r.claim].kind,
        r.p_effect_holm,
        r.p_negligible_holm,
        np.sign(r.estimate),
        alpha,
        r.family,
    )
    return v if v == r.verdict else "inconclusive"


def rule_text(cl: Claim, delta: float, rules: AnalysisConfig) -> str:
    conf = 100 * rules.confidence
    tost = 100 * (2 * rules.confidence - 1)
    alpha = 100 * (1 - rules.confidence)
    if cl.kind == "effect":
        text = (
            f"δ = {delta:g}; t test against 0 ({conf:g}% interval) and TOST at ±δ ({tost:g}% "
            "interval): reproduced if it differs from 0 in the paper's direction and is not "
            "shown inside ±δ; smaller than the paper's if it differs but lies inside; absent if "
            "inside and not different; reversed if it differs in the other direction"
        )
    elif cl.kind == "equivalence":
        text = (
            f"δ = {delta:g}; TOST at ±δ ({tost:g}% interval inside ±δ): reproduced; "
            f"contradicted if the {conf:g}% interval lies beyond ±δ; else inconclusive"
        )
    else:
        text = (
            f"δ = {delta:g}; at every cut the one-sided {alpha:g}% test shows AnB+ − baseB above "
            f"−δ: reproduced; contradicted if at some cut it is shown below −δ (Bonferroni over "
            "cuts); else inconclusive"
        )
    if cl.name == "dissimilar_worse":
        text += "; Welch's test, dissimilar blocks against random ones"
    if cl.name == "dissimilar_dose_response":
        text += (
            "; least-squares slope over the random blocks of the normalised drop on the group "
            "separation |g_A/n_A − g_B/n_B| (g: a task's classes from the dissimilar split's "
            "task A, n: its classes; 0 = the groups evenly divided, 1 = fully separated, as in "
            "the dissimilar split), from 0 to 1: the paper's random 500/500 ImageNet splits "
            "sit near 0, its dissimilar split at 1"
        )
    if cl.name.startswith("boost_over"):
        text += "; decided by the paper's Table 1 first row (all cuts)"
    return text + DIAGNOSTIC_RULES.get(cl.name, "")


DIAGNOSTIC_RULES = {
    "stitch_penalty_below_specificity": (
        "; the stitch (a 1×1 convolution or linear map, identity at the start) trained alone on "
        "B's training images; both sides scored on B's test images; δ of first_layer_general: "
        "a difference smaller than the smallest specificity that counts"
    ),
    "reinit_first_layer_critical": (
        "; each base's layer reset to its own initial draw (rebuilt from the base's init seed), "
        "scored on its task's test images, averaged over the block's two bases; δ: about ten "
        "times a base's seed-to-seed SD"
    ),
    "finetune_stays_in_source_basin": (
        "; barrier: the largest shortfall below the line between the ends' accuracies over "
        "evenly spaced α (beyond.interpolation_points), the first n layers interpolated, AnB+'s "
        "above; mean over the diagnostics' cuts; δ: about twice a base's seed-to-seed SD"
    ),
    "reuse_beats_scale": (
        "; the start draws each output channel of baseA's first n layers from a normal of its "
        "mean and SD, then fine-tunes as AnB+ (same data order and upper-layer draw); mean over "
        "the diagnostics' cuts; δ of boost_over_selffer"
    ),
}


def evaluate(
    c: Context,
    pilot_converged: bool | None = None,
    paper: dict[str, float] | None = None,
    without_failed: Context | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claims, gates): every registered claim's row (COLUMNS) and the gates' table."""
    rules, alpha = c.rules, 1 - c.rules.confidence
    gate_table = gates(c, pilot_converged)
    failed_gates = blocking(gate_table)
    rows, measured = [], {}
    for name, cl in REGISTRY.items():
        if cl.needs and getattr(c, cl.needs) is None:
            continue  # its stage has not run: not listed, so the other rows stay as they were
        m = cl.measure(c)
        measured[name] = m
        delta = rules.sesoi[name]
        e = m.estimate
        lo, hi = e.interval(rules.confidence)
        tost_lo, tost_hi = e.interval(2 * rules.confidence - 1)
        p_effect, p_negligible = tests(cl.kind, m, delta)
        reason = _not_testable(cl, m, c, failed_gates)
        raw = (
            "not testable"
            if reason
            else verdict(cl.kind, p_effect, p_negligible, np.sign(e.estimate), alpha, cl.family)
        )
        rule = rule_text(cl, delta, rules)
        again = cl.measure(without_failed).estimate if without_failed is not None else e
        rows.append(
            {
                "claim": name,
                "family": cl.family,
                "finding": cl.finding,
                "statistic": m.statistic,
                "paper": (paper or {}).get(name, math.nan),
                "delta": delta,
                "estimate": e.estimate,
                "ci_low": lo,
                "ci_high": hi,
                "tost_low": tost_lo,
                "tost_high": tost_hi,
                "blocks": e.blocks,
                "p_effect": p_effect if not reason else math.nan,
                "p_negligible": p_negligible if not reason else math.nan,
                "verdict": raw,
                "estimate_without_failed": again.estimate,
                "blocks_without_failed": again.blocks,
                "rule": f"not testable: {reason}; {rule}" if reason else rule,
            }
        )
    out = pd.DataFrame(rows)
    # one Holm family per family of claims: both tests of every testable claim, at most one of
    # each pair true (Shaffer's cap); the adjustment never strengthens a verdict
    for _, g in out.groupby("family", sort=False):
        pvals = {
            (k, col): g.at[i, col]
            for i, k in zip(g.index, g.claim, strict=True)
            for col in ("p_effect", "p_negligible")
        }
        adj = holm(pvals, max_true=int(g.p_effect.notna().sum()))
        for i, k in zip(g.index, g.claim, strict=True):
            for col in ("p_effect", "p_negligible"):
                out.loc[i, f"{col}_holm"] = adj[(k, col)]
    out["verdict_holm"] = [adjusted(r, alpha) for r in out.itertuples()]
    return out[COLUMNS], gate_table


def _not_testable(cl: Claim, m: Measured, c: Context, failed_gates: list[str]) -> str:
    r = c.rules
    if m.why_not:
        return m.why_not
    if m.needs_dissimilar:
        dis = len(block_values(c.dissimilar, lambda u: u["baseB"])) if len(c.dissimilar) else 0
        rnd = len(block_values(c.random, lambda u: u["baseB"])) if len(c.random) else 0
        if dis < r.min_blocks_dissimilar or rnd < r.min_blocks:
            return (
                f"{dis} dissimilar blocks (need {r.min_blocks_dissimilar}) and {rnd} "
                f"random-split blocks (need {r.min_blocks})"
            )
    elif m.estimate.blocks < r.min_blocks:
        return f"fewer than {r.min_blocks} random-split blocks ({m.estimate.blocks})"
    if not m.estimate.testable:
        return "no spread to test (fewer than two values)"
    if cl.against_base and failed_gates:
        return "measured against baseB, and a gate failed: " + "; ".join(failed_gates)
    return ""
