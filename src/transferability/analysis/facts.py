"""The numbers and flags the report prints that no results table holds: sums, extremes and
choices over the tables, computed here (and tested) so that the report notebook only formats.
"""

from __future__ import annotations

import math

import pandas as pd

from transferability.analysis.budget import chosen_budget


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def report_facts(
    runs: pd.DataFrame,
    gaps: pd.DataFrame,
    blocks: dict[str, int],
    num_layers: int,
    pilot_budgets: pd.DataFrame | None = None,
    pilot_runs: pd.DataFrame | None = None,
    datasize: pd.DataFrame | None = None,
    cka: pd.DataFrame | None = None,
    diagnostics: pd.DataFrame | None = None,
) -> dict:
    """Everything the report states about the study beyond its tables, as plain numbers."""
    bases = runs[runs.treatment == "base"]
    top = num_layers - 1
    rnb = gaps[(gaps.split_kind == "random") & (gaps.gap == "random_frozen_drop")]
    rnb = rnb.set_index("n").estimate if len(rnb) else pd.Series(dtype=float)
    has_rnb = top in rnb.index
    return {
        "blocks_total": int(sum(blocks.values())),
        "df": {k: max(v - 1, 0) for k, v in blocks.items()},
        "train_seconds": float(runs.seconds.sum()),
        "train_seconds_by_kind": {
            str(k): float(v) for k, v in runs.groupby("split_kind").seconds.sum().items()
        },
        "base_acc_min": _num(bases.test_acc.min()) if len(bases) else None,
        "base_acc_max": _num(bases.test_acc.max()) if len(bases) else None,
        "study_per_class": (
            _num((bases.train_images / bases.num_classes).median()) if len(bases) else None
        ),
        # the random-frozen control's drop: where it is largest on the random splits
        "random_drop": {
            "peak_n": int(rnb.idxmax()) if has_rnb else None,
            "peak": _num(rnb.max()) if has_rnb else None,
            "top": _num(rnb[top]) if has_rnb else None,
            "peaks_below_top": bool(has_rnb and rnb.idxmax() < top),
        },
        "pilot": {
            "chosen": chosen_budget(pilot_budgets),
            "seconds": float(pilot_runs.seconds.sum()) if pilot_runs is not None else None,
        },
        "datasize_blocks": int(datasize.blocks.max()) if _has(datasize) else 0,
        "cka_blocks": int(cka.blocks.max()) if _has(cka) else 0,
        "cka_images": (int(cka.images.max()) if _has(cka) and cka.images.notna().any() else None),
        # diagnostics_summary.csv: the blocks of its widest row
        "diagnostics_blocks": int(diagnostics.blocks.max()) if _has(diagnostics) else 0,
    }


def _has(df: pd.DataFrame | None) -> bool:
    return df is not None and len(df) > 0
