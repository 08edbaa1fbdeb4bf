"""Tests over blocks: a mean (or a difference of means, or a slope) with its standard error and
degrees of freedom, and the one- and two-sided t tests that the claims' verdicts are built from.

All p-values come from Student's t distribution:

- ``p_zero``: two-sided test of "the effect is 0" (it rejects exactly when the 1 − α interval
  excludes 0);
- ``p_equivalent(δ)``: the equivalence test, two one-sided tests (TOST) of "the effect is at most
  −δ" and "at least +δ"; the larger p (it rejects exactly when the 1 − 2α interval lies inside
  ±δ; Schuirmann 1987, Lakens 2017);
- ``p_beyond(δ)``: the minimum-effect test of "the effect lies inside ±δ", α/2 in each tail (it
  rejects exactly when the 1 − α interval lies wholly beyond ±δ; conservative: size α/2);
- ``p_above(b)`` / ``p_below(b)``: one-sided tests of "the effect is at most b" / "at least b".

`holm` is Holm's (1979) step-down adjustment of a family of p-values, with Shaffer's (1986)
cap on how many hypotheses can be true at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """An estimate with its standard error and degrees of freedom, over `blocks` blocks."""

    estimate: float
    se: float
    df: float
    blocks: int

    def _t(self, bound: float) -> float:
        return (self.estimate - bound) / self.se

    @property
    def testable(self) -> bool:
        """At least two values that are not all equal (a zero spread has nothing to test)."""
        finite = math.isfinite(self.estimate) and math.isfinite(self.se)
        return self.df >= 1 and finite and self.se > 0

    def interval(self, confidence: float) -> tuple[float, float]:
        if not self.testable:
            return math.nan, math.nan
        half = stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return self.estimate - half, self.estimate + half

    def p_above(self, bound: float) -> float:
        """One-sided p of H0: effect ≤ bound (small p: the effect lies above `bound`)."""
        return float(stats.t.sf(self._t(bound), self.df)) if self.testable else math.nan

    def p_below(self, bound: float) -> float:
        """One-sided p of H0: effect ≥ bound (small p: the effect lies below `bound`)."""
        return float(stats.t.cdf(self._t(bound), self.df)) if self.testable else math.nan

    @property
    def p_zero(self) -> float:
        """Two-sided p of H0: effect = 0."""
        if not self.testable:
            return math.nan
        return min(1.0, 2 * min(self.p_above(0.0), self.p_below(0.0)))

    def p_equivalent(self, delta: float) -> float:
        """TOST p of H0: |effect| ≥ δ (small p: the effect lies inside ±δ)."""
        return max(self.p_above(-delta), self.p_below(delta))

    def p_beyond(self, delta: float) -> float:
        """Two-sided minimum-effect test of H0: |effect| ≤ δ (small p: the effect lies beyond
        ±δ); it rejects exactly when the 1 − α interval lies wholly outside ±δ."""
        if not self.testable:
            return math.nan
        return min(1.0, 2 * min(self.p_above(delta), self.p_below(-delta)))

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.estimate * factor, self.se * abs(factor), self.df, self.blocks)


NONE = Estimate(math.nan, math.nan, 0, 0)


def one_sample(values) -> Estimate:
    """The mean of block values, its standard error and df = blocks − 1."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return NONE
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return Estimate(float(v.mean()), se, len(v) - 1, len(v))


def welch(x, y) -> Estimate:
    """mean(x) − mean(y) with Welch's standard error and Welch–Satterthwaite df; `blocks`
    counts x's."""
    x = np.asarray([v for v in x if np.isfinite(v)], dtype=float)
    y = np.asarray([v for v in y if np.isfinite(v)], dtype=float)
    if len(x) < 2 or len(y) < 2:
        est = x.mean() - y.mean() if len(x) and len(y) else math.nan
        return Estimate(float(est), math.nan, 0, len(x))
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se > 0 else len(x) - 1
    return Estimate(float(x.mean() - y.mean()), se, float(df), len(x))


def slope(x, y) -> Estimate:
    """The least-squares slope of y on x, its standard error and df = points − 2."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0:
        return Estimate(math.nan, math.nan, 0, len(x))
    fit = stats.linregress(x, y)
    return Estimate(float(fit.slope), float(fit.stderr), len(x) - 2, len(x))


def holm(pvalues: dict, max_true: int | None = None) -> dict:
    """Holm's step-down adjusted p-values of a family (NaN entries are not members).

    `max_true` caps how many of the family's hypotheses can be true at once (Shaffer 1986):
    at step i the multiplier is min(max_true, hypotheses left). For each claim's pair of tests
    (no effect; an effect at least δ) at most one hypothesis is true, so a family of m claims
    tested both ways has 2m members and max_true = m."""
    members = sorted((p, k) for k, p in pvalues.items() if np.isfinite(p))
    m, running, out = len(members), 0.0, {k: math.nan for k in pvalues}
    cap = m if max_true is None else max_true
    for i, (p, k) in enumerate(members):
        running = max(running, min(1.0, min(cap, m - i) * p))
        out[k] = running
    return out
