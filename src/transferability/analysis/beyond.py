"""Beyond the paper: the target-size sweep and layer similarity (CKA), summarised over blocks."""

from __future__ import annotations

import math

import pandas as pd

from transferability.analysis.blocks import (
    block_values,
    complete_blocks,
    diff,
    interval,
    unit_table,
)
from transferability.config import AnalysisConfig


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


# the columns of the similarity stage's table (similarity.CKA_COLUMNS)
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
