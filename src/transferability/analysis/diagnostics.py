"""Beyond the paper, part 2: the diagnostics' table (diagnostics.py) summarised over blocks, and
the per-unit values that the diagnostics' claims read.

As everywhere, a block (split, seed) is the replicate: a value is first averaged inside its
block (over the two directions, or over the two bases for a base's own diagnostic, reinit; a
block lacking one gives no number), then given a Student-t interval over blocks.
"""

from __future__ import annotations

import math

import pandas as pd

from transferability.analysis.blocks import block_values, diff, interval
from transferability.config import AnalysisConfig

# the columns of the diagnostics stage's table (diagnostics.COLUMNS)
COLUMNS = [
    "split",
    "seed",
    "direction",
    "task",
    "n",
    "diagnostic",
    "variant",
    "alpha",
    "accuracy",
    "val_accuracy",
    "reference",
    "value",
    "seconds",
]
SUMMARY_COLUMNS = [
    "diagnostic",
    "variant",
    "statistic",
    "n",
    "alpha",
    "estimate",
    "ci_low",
    "ci_high",
    "blocks",
    "label",
]
# per-unit columns (fractions) that the claims read: (diagnostic, variant, statistic)
UNIT_VALUES = {
    "stitch_penalty": ("stitching", "trained", "value"),
    "barrier_source": ("interpolation", "to source", "barrier"),
    "barrier_selffer": ("interpolation", "to BnB+", "barrier"),
    "scale_gap": ("transfusion", "scale", "value"),
}
REINIT_DELTA = "reinit_first_layer_critical"  # its δ also labels each layer robust or critical


def read(path) -> pd.DataFrame:
    """The diagnostics stage's table ("" directions read back as "", not nan)."""
    df = pd.read_csv(path)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a diagnostics table (no column {sorted(missing)})")
    direction = df.direction.astype(object).fillna("")
    return df.assign(direction=direction, variant=df.variant.astype(object).fillna(""))


def barriers(diag: pd.DataFrame) -> pd.DataFrame:
    """One row per interpolation path (block, direction, variant, cut): its barrier, the largest
    shortfall below the line between its ends (`value`), with variant and cut as the path's."""
    paths = diag[diag.diagnostic == "interpolation"]
    keys = ["split", "seed", "direction", "task", "n", "diagnostic", "variant"]
    return paths.groupby(keys, as_index=False).value.max()


def _per_block(g: pd.DataFrame, column: str, members: int) -> pd.Series:
    """`column` averaged inside each block over its members (directions, or tasks for reinit);
    nan where a member is missing or nan."""
    member = "task" if (g.diagnostic == "reinit").all() else "direction"
    return g.groupby(["split", "seed"])[[member, column]].apply(
        lambda b: (
            b[column].mean()
            if b[member].nunique() == members == len(b) and b[column].notna().all()
            else math.nan
        )
    )


def diagnostics_table(diag: pd.DataFrame, rules: AnalysisConfig, directions=None) -> pd.DataFrame:
    """Per diagnostic, variant and cut (reinit: layer): the mean over blocks, with its interval,
    of `value` (the penalty, drop, shortfall or AnB+'s edge, a fraction), of `accuracy`, and
    for the interpolation of each path's `barrier`; at every α of a path too. A reset layer is
    labelled robust when its drop's interval lies below the δ of reinit_first_layer_critical,
    critical when above, unclear when across (with too few blocks for an interval, by its
    mean)."""
    diag = diag.assign(statistic="value")
    parts = [
        diag,
        diag.assign(statistic="accuracy", value=diag.accuracy),
        barriers(diag).assign(statistic="barrier", alpha=math.nan),
    ]
    rows = []
    keys = ["diagnostic", "variant", "statistic", "n", "alpha"]
    for (diagnostic, variant, statistic, n, alpha), g in pd.concat(parts).groupby(
        keys, dropna=False, sort=True
    ):
        if diagnostic == "reinit":
            members = diag[diag.diagnostic == "reinit"].task.nunique()
        else:
            members = len(directions or set(diag.direction) - {""})
        s = interval(_per_block(g, "value", members).dropna(), rules.confidence, rules.min_blocks)
        label = ""
        if diagnostic == "reinit" and statistic == "value":
            label = robustness(s, rules.sesoi[REINIT_DELTA] / 100)
        row = dict(zip(keys, (diagnostic, variant, statistic, n, alpha), strict=True))
        rows.append(row | s | {"label": label})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def robustness(s: dict, delta: float) -> str:
    """robust / critical / unclear: a reset layer's drop against δ (see `diagnostics_table`)."""
    lo, hi, est = s["ci_low"], s["ci_high"], s["estimate"]
    if math.isnan(est):
        return ""
    if math.isnan(lo):
        return "robust" if est < delta else "critical"
    return "robust" if hi < delta else "critical" if lo > delta else "unclear"


def unit_values(diag: pd.DataFrame) -> pd.DataFrame:
    """Per (split, seed, direction, n): the stitching penalty, both paths' barriers and
    AnB+'s edge over the scale-matched start (UNIT_VALUES; fractions)."""
    keys = ["split", "seed", "direction", "n"]
    parts = pd.concat([diag.assign(statistic="value"), barriers(diag).assign(statistic="barrier")])
    out = parts.loc[parts.direction != "", keys].drop_duplicates()
    for name, (diagnostic, variant, statistic) in UNIT_VALUES.items():
        sel = parts[
            (parts.diagnostic == diagnostic)
            & (parts.variant == variant)
            & (parts.statistic == statistic)
        ]
        out = out.merge(sel[[*keys, "value"]].rename(columns={"value": name}), on=keys, how="left")
    return out.reset_index(drop=True)


def with_diagnostics(units: pd.DataFrame, diag: pd.DataFrame) -> pd.DataFrame:
    """The unit table with the diagnostics' per-unit values beside each unit's accuracies
    (nan where the diagnostics did not reach a unit)."""
    keys = ["split", "seed", "direction", "n"]
    return units.merge(unit_values(diag), on=keys, how="left")


def column(name: str):
    """A unit table's column, or nan where it lacks one (as `blocks.diff`)."""
    return lambda u: u[name] if name in u else pd.Series(math.nan, index=u.index)


def reinit_contrast(diag: pd.DataFrame, first: int, second: int) -> pd.Series:
    """Per block: the drop on resetting layer `first` to its initial weights minus the drop
    on resetting layer `second`, averaged over the block's two bases (fractions)."""
    r = diag[(diag.diagnostic == "reinit") & (diag.variant == "init")]
    wide = r.pivot_table(index=["split", "seed", "task"], columns="n", values="value")
    if first not in wide or second not in wide:
        return pd.Series(dtype=float)
    per_base = (wide[first] - wide[second]).rename("value").reset_index()
    tasks = r.task.nunique()
    return _per_block(per_base.assign(diagnostic="reinit"), "value", tasks).dropna()


def stitching_pairs(units: pd.DataFrame, diag: pd.DataFrame, rules: AnalysisConfig) -> pd.DataFrame:
    """At each stitching cut, over the same units (the random blocks and directions that have
    both a stitching penalty and AnB and BnB at that cut): the stitching penalty, AnB's
    specificity gap BnB − AnB, and their difference, the quantity that
    `stitch_penalty_below_specificity` averages over the middle cuts (fractions;
    diagnostics_table's columns, statistic "paired")."""
    stitched = diag[(diag.diagnostic == "stitching") & (diag.variant == "trained")]
    u = with_diagnostics(units, diag)
    penalty = column("stitch_penalty")

    def spec(x: pd.DataFrame) -> pd.Series:  # where the unit has a penalty, the pair's other half
        return diff("BnB", "AnB")(x).where(penalty(x).notna())

    values = {
        "penalty": lambda x: penalty(x).where(spec(x).notna()),
        "specificity": spec,
        "specificity − penalty": lambda x: spec(x) - penalty(x),
    }
    rows = []
    for n in sorted(set(stitched.n)):
        for variant, value in values.items():
            s = interval(block_values(u, value, [n]).dropna(), rules.confidence, rules.min_blocks)
            key = {"diagnostic": "stitching", "variant": variant, "statistic": "paired", "n": n}
            rows.append(key | {"alpha": math.nan} | s | {"label": ""})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
