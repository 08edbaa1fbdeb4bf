import math

import pandas as pd
import pytest

from transferability.analysis import analyse, gap_table, mean_ci, table1, unit_table
from transferability.study import COLUMNS, write_runs


def row(split, seed, direction, treatment, n, acc):
    s, t = direction.split("->") if direction else ("", "B" if treatment == "baseB" else "A")
    if treatment in ("baseA", "baseB"):
        t, treatment = treatment[-1], "base"
    return {
        "network": f"{split}/s{seed}/{treatment}{n}{t}{direction}",
        "split": split,
        "split_kind": "random",
        "seed": seed,
        "direction": direction,
        "source_task": s,
        "target_task": t,
        "treatment": treatment,
        "n": n,
        "test_acc": acc,
        "train_acc": acc,
    }


@pytest.fixture
def runs():
    """Two splits, direction A->B, cuts 1 and 2, with numbers chosen by hand."""
    rows = []
    for split, base in (("r0", 0.80), ("r1", 0.70)):
        rows += [row(split, 0, "", "baseA", 0, 0.5), row(split, 0, "", "baseB", 0, base)]
        for n, (bnb, anb, bnbp, anbp, rnb) in {
            1: (base, base - 0.01, base + 0.01, base + 0.02, base - 0.1),
            2: (base - 0.05, base - 0.15, base, base + 0.03, base - 0.3),
        }.items():
            accs = (bnb, anb, bnbp, anbp, rnb)
            for t, acc in zip(("BnB", "AnB", "BnB+", "AnB+", "RnB"), accs, strict=True):
                rows.append(row(split, 0, "A->B", t, n, acc))
    return pd.DataFrame(rows)


def test_gaps_are_paired_differences_against_the_same_target_base(runs):
    units = unit_table(runs)
    assert len(units) == 4
    g = gap_table(units).set_index(["gap", "n"])["mean"]
    assert g["co_adaptation", 1] == pytest.approx(0.0)
    assert g["co_adaptation", 2] == pytest.approx(0.05)
    assert g["specificity", 1] == pytest.approx(0.01)
    assert g["specificity", 2] == pytest.approx(0.10)
    assert g["fine_tuning_benefit", 2] == pytest.approx(0.18)
    assert g["transfer_boost", 2] == pytest.approx(0.03)
    assert g["selffer_fine_tuning", 1] == pytest.approx(0.01)
    assert g["random_frozen_drop", 2] == pytest.approx(0.3)


def test_paired_gaps_have_no_spread_when_splits_differ_only_in_level(runs):
    # the two splits' bases differ by 0.1, but every gap is the same in both: zero-width CI
    g = gap_table(unit_table(runs))
    assert (g.ci_high - g.ci_low).abs().max() == pytest.approx(0.0, abs=1e-12)
    assert (g["count"] == 2).all()


def test_table1_pools_cut_ranges():
    units = pd.DataFrame({
        "split": ["r"] * 4, "split_kind": ["random"] * 4, "seed": [0] * 4,
        "direction": ["A->B"] * 4, "n": [1, 2, 3, 4],
        "baseB": [0.5] * 4, "BnB+": [0.5, 0.5, 0.5, 0.6], "AnB+": [0.51, 0.52, 0.53, 0.54],
    })  # fmt: skip
    t = table1(units, num_layers=5).set_index("cuts")
    assert t.loc["all", "over_baseB_mean"] == pytest.approx(0.025)
    assert t.loc["upper_half", "over_baseB_mean"] == pytest.approx(0.035)
    assert (t.loc["upper_half", "n_from"], t.loc["top", "n_from"]) == (3, 4)
    assert t.loc["top", "over_BnB_plus_mean"] == pytest.approx(-0.06)


def test_mean_ci_is_a_t_interval():
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["count"] == 3
    assert r["ci_high"] - 2.0 == pytest.approx(4.302653 * 1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci([1.0])["ci_low"])


def test_analyse_writes_the_results_files(runs, tmp_path):
    write_runs(tmp_path / "runs.csv", runs.to_dict("records"))
    assert set(pd.read_csv(tmp_path / "runs.csv").columns) == set(COLUMNS)
    s = analyse(tmp_path / "runs.csv", tmp_path, num_layers=3)
    acc = pd.read_csv(tmp_path / "accuracy.csv")
    base = acc[acc.treatment == "baseB"].iloc[0]
    assert base["mean"] == pytest.approx(0.75) and base["count"] == 2
    assert (tmp_path / "gaps.csv").is_file() and (tmp_path / "summary.json").is_file()
    assert s["networks"] == len(runs) and s["units"] == 2
