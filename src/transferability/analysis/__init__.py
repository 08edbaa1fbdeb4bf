"""Results → block statistics, the paper's Table 1, the claims under rules v2, the budget rules
and the work beyond the paper; one module a job:

- `blocks`: the unit table, block means and intervals, gaps, accuracy and Table 1 tables;
- `inference`: the t tests behind the verdicts (against 0, TOST, minimum effect, Holm);
- `claims`: rules v2, the claims as a registry of small functions with one gate;
- `rules_v1`: the rules the reference study was registered under (kept unchanged);
- `paper`: the original paper's size of each claim's statistic;
- `beyond`: the target-size sweep and the layer similarity, summarised;
- `budget`: the convergence pilot's rule and the time-to-accuracy benchmark;
- `summary`: the aggregate stage's writer (every file under results/).
"""

from transferability.analysis.blocks import (
    BLOCK,
    GAPS,
    UNIT,
    accuracy_table,
    block_values,
    complete_blocks,
    diff,
    failed_networks,
    gap_table,
    interval,
    normalised,
    read,
    table1,
    table1_ranges,
    unit_table,
)
from transferability.analysis.budget import (
    RECIPE_KEY,
    budget_regime,
    choose_budget,
    first_within,
    pooled_seed_sd,
    time_to_accuracy,
    time_to_level,
)
from transferability.analysis.summary import analyse, headline

__all__ = [
    "BLOCK",
    "GAPS",
    "RECIPE_KEY",
    "UNIT",
    "accuracy_table",
    "analyse",
    "block_values",
    "budget_regime",
    "choose_budget",
    "complete_blocks",
    "diff",
    "failed_networks",
    "first_within",
    "gap_table",
    "headline",
    "interval",
    "normalised",
    "pooled_seed_sd",
    "read",
    "table1",
    "table1_ranges",
    "time_to_accuracy",
    "time_to_level",
    "unit_table",
]
