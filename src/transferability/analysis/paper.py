"""The original paper's size of each claim's statistic, from its published numbers
(`report/reference/`: per-layer top-1 accuracy and Table 1; ImageNet, 8 layers, cuts 1–7).

Each size is the same statistic as our claim's, on the paper's cuts; rules v2 set each
claim's smallest effect size of interest δ to half of it (`analysis.sesoi` in params.yaml; a
test keeps the two in step). Sizes are in accuracy points (normalised claims: in % of baseB's
accuracy above chance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PAPER_CUTS = range(1, 8)
PAPER_CHANCE = 1 / 500  # the paper's tasks A and B: about 500 ImageNet classes each
PAPER_CHANCE_ALL = 1 / 1000  # its random-frozen control: all 1,000 classes


def paper_sizes(reference_dir: str | Path) -> dict[str, float]:
    """Claim name → the paper's value of that claim's statistic."""
    ref = Path(reference_dir)
    top1 = pd.read_csv(ref / "yosinski2014_top1.csv").set_index(["treatment", "n"]).top1
    t1 = pd.read_csv(ref / "yosinski2014_table1.csv").set_index("cuts")

    def acc(t: str, n: int) -> float:
        return 100 * float(top1[(t, n)])

    base = acc("baseB", 0)

    def spec(n):
        return acc("BnB", n) - acc("AnB", n)

    def norm(t, n, b, chance):
        return 100 * (top1[(t, n)] - chance) / (b - chance)

    drop_rnd = np.mean([100 - norm("AnB", n, base / 100, PAPER_CHANCE) for n in PAPER_CUTS])
    dis_base = float(top1[("dissimilar_base", 0)])
    drop_dis = np.mean(
        [100 - norm("dissimilar_AnB", n, dis_base, PAPER_CHANCE) for n in PAPER_CUTS]
    )
    rf_base = float(top1[("random_frozen_base", 0)])
    collapse = np.mean(
        [
            norm("AnB", n, base / 100, PAPER_CHANCE)
            - norm("random_frozen", n, rf_base, PAPER_CHANCE_ALL)
            for n in range(3, 8)
        ]
    )
    return {
        "first_layer_general": spec(1),
        # the specificity that sets the margin of "no specificity": the smallest the paper
        # reads as a real drop (n = 5)
        "first_layer_general_margin": spec(5),
        # the middle cuts 2..L−2, as ours
        "coadaptation_middle": float(np.mean([base - acc("BnB", n) for n in range(2, 7)])),
        "specificity_grows": spec(7) - spec(1),
        # the smallest gain of AnB+ over baseB at any cut
        "finetune_recovers": min(acc("AnB+", n) - base for n in PAPER_CUTS),
        "boost_over_base": 100 * float(t1.loc["all", "over_baseB"]),
        "boost_over_selffer": 100 * float(t1.loc["all", "over_BnB_plus"]),
        "dissimilar_worse": float(drop_dis - drop_rnd),
        "dissimilar_dose_response": float(drop_dis - drop_rnd),
        "random_frozen_collapse": float(collapse),
    }
