"""Block-level statistics and the claims' rules, on tables whose answers were worked out by hand."""

import math

import pandas as pd
import pytest
from scipy import stats

from transferability.analysis import (
    analyse,
    block_values,
    diff,
    gap_table,
    interval,
    table1,
    unit_table,
)
from transferability.analysis.rules_v1 import claims
from transferability.config import AnalysisConfig
from transferability.networks import COLUMNS
from transferability.runner import write_runs

from .factories import L, make_runs

RULES = AnalysisConfig()


def by_claim(df):
    return df.set_index("claim")


def test_table1_averages_inside_blocks_then_intervals_over_blocks():
    """AnB+ − baseB is 0.01·b + 0.001·n in direction A->B and 0.01·b − 0.001·n in B->A: the
    block means are 0.01·b (n cancels between directions), so the interval is the t interval of
    {0, .01, .02, .03, .04} with df = 4, not one over the 40 (unit, cut) rows."""

    def acc(b, t, tr, n):
        if tr == "base":
            return 0.6
        sign = 1 if t == "B" else -1
        return 0.6 + 0.01 * b + sign * 0.001 * n if tr == "AnB+" else 0.6

    units = unit_table(make_runs(5, acc))
    t1 = table1(units, L, RULES).set_index("cuts")
    v = [0, 0.01, 0.02, 0.03, 0.04]
    half = stats.t.ppf(0.975, 4) * stats.sem(v)
    assert t1.loc["all", "over_baseB_estimate"] == pytest.approx(0.02)
    assert t1.loc["all", "over_baseB_ci_high"] - 0.02 == pytest.approx(half)
    assert t1.loc["all", "over_baseB_blocks"] == 5
    assert (t1.loc["upper_half", "n_from"], t1.loc["top", "n_from"]) == (2, 3)
    pooled = stats.sem(
        [0.01 * b + s * 0.001 * n for b in range(5) for s in (1, -1) for n in (1, 2, 3, 4)]
    )
    assert half > 2 * stats.t.ppf(0.975, 39) * pooled  # the dependent-rows interval is far narrower


def test_no_interval_or_verdict_from_fewer_blocks_than_the_rule():
    runs = make_runs(4, lambda b, t, tr, n: 0.6 + 0.001 * b if tr != "AnB" else 0.55)
    units = unit_table(runs)
    g = gap_table(units, RULES)
    assert g.ci_low.isna().all() and (g.blocks == 4).all()
    c = claims(units, L, RULES)
    assert (c.verdict == "not testable").all()
    assert c.ci_low.isna().all()
    assert "fewer than 5 random-split blocks" in by_claim(c).loc["specificity_grows", "rule"]


def test_equivalence_never_calls_an_interval_that_excludes_zero_general():
    """BnB − AnB at n=1 per block: [0.25, 1.27]-like data excludes 0 → not general."""
    spec = {
        "general": [0.2, -0.3, 0.1, 0.0, -0.1],
        "excludes_0": [0.5, 0.9, 0.7, 1.0, 0.6],
        "huge": [3.0, 3.2, 2.9, 3.1, 3.3],
    }
    verdicts = {}
    for name, pts in spec.items():

        def acc(b, t, tr, n, pts=pts):
            if tr == "AnB" and n == 1:
                return 0.6 - pts[b] / 100
            return 0.6

        verdicts[name] = by_claim(claims(unit_table(make_runs(5, acc)), L, RULES)).loc[
            "first_layer_general"
        ]
    assert verdicts["general"].verdict == "supported"
    assert verdicts["general"].estimate == pytest.approx(-0.02)
    # inside the ±1-point margin but excluding 0: neither general nor specific, by the rule
    assert 0 < verdicts["excludes_0"].ci_low < verdicts["excludes_0"].ci_high < 1
    assert verdicts["excludes_0"].verdict == "inconclusive"
    assert verdicts["huge"].verdict == "contradicted"


def test_unconverged_bases_make_coadaptation_and_boost_not_testable():
    """B4B beats baseB by 2 points: the base has not converged."""

    def acc(b, t, tr, n):
        if tr == "base":
            return 0.60 + 0.001 * b
        return 0.62 + 0.001 * b + 0.0005 * (b % 2) if tr in ("BnB", "BnB+", "AnB+") else 0.5

    c = by_claim(claims(unit_table(make_runs(5, acc)), L, RULES))
    assert c.loc["converged_top_selffer", "verdict"] == "contradicted"
    assert c.loc["converged_top_selffer", "estimate"] == pytest.approx(2.0, abs=0.05)
    for claim in ("coadaptation_middle", "boost_over_base", "boost_over_selffer"):
        assert c.loc[claim, "verdict"] == "not testable"
        assert "have not converged" in c.loc[claim, "rule"]
    assert c.loc["specificity_grows", "verdict"] != "not testable"


def test_claims_on_a_hand_made_study_match_the_hand_computation():
    """Converged bases; specificity 0.1·n² points... every claim worked out by hand."""
    noise = [0.0, 0.002, -0.002, 0.001, -0.001]  # per block

    def acc(b, t, tr, n):
        e = noise[b]
        return {
            "base": 0.70 + e,
            "BnB": 0.70
            + e
            - (0.01 if n in (2, 3) else 0.0)
            + e,  # co-adaptation 1 pt in the middle
            "BnB+": 0.70 + e,
            "AnB": 0.70 + e - 0.001 * n * n + e,  # specificity 0.1·n² points
            "AnB+": 0.71 + e,  # boost 1 point, also over BnB+
            "RnB": 0.45 + e,
        }[tr]

    units = unit_table(make_runs(5, acc))
    c = by_claim(claims(units, L, RULES))
    # co-adaptation: baseB − BnB over n=2,3 inside each block = 1 − 100·e points
    co = [1 - 100 * e for e in noise]
    assert c.loc["coadaptation_middle", "estimate"] == pytest.approx(sum(co) / 5)
    assert c.loc["coadaptation_middle", "verdict"] == "supported"
    # specificity at n=4 minus at n=1: (1.6 − 0.1) points − 0 (the noise is paired out)
    assert c.loc["specificity_grows", "estimate"] == pytest.approx(1.5)
    assert c.loc["specificity_grows", "ci_low"] == pytest.approx(1.5)
    assert c.loc["specificity_grows", "verdict"] == "supported"
    for claim in ("boost_over_base", "boost_over_selffer", "finetune_recovers"):
        assert c.loc[claim, "estimate"] == pytest.approx(1.0)
        assert c.loc[claim, "verdict"] == "supported"
    assert c.loc["random_frozen_collapse", "verdict"] == "supported"
    assert c.loc["dissimilar_worse", "verdict"] == "not testable"  # no dissimilar blocks


def test_dissimilar_is_compared_normalised_for_chance():
    """Dissimilar tasks of 4/6 classes vs random 5/5: (acc − chance)/(baseB − chance)."""

    def rnd(b, t, tr, n):
        return {"base": 0.60, "AnB": 0.60 - 0.004 * b}.get(tr, 0.6)

    def dis(b, t, tr, n):
        return {"base": 0.70, "AnB": 0.60 - 0.004 * b}.get(tr, 0.7)

    runs = pd.concat([make_runs(5, rnd), make_runs(3, dis, "dissimilar", classes=6)])
    c = by_claim(claims(unit_table(runs), L, RULES)).loc["dissimilar_worse"]
    chance = 1 / 6
    d_dis = [1 - (0.60 - 0.004 * b - chance) / (0.70 - chance) for b in range(3)]
    d_rnd = [1 - (0.60 - 0.004 * b - 0.2) / (0.60 - 0.2) for b in range(5)]
    assert c.estimate == pytest.approx(100 * (sum(d_dis) / 3 - sum(d_rnd) / 5))
    ci = stats.ttest_ind(d_dis, d_rnd, equal_var=False).confidence_interval(0.95)
    assert c.ci_low == pytest.approx(100 * ci.low) and c.verdict == "supported"


def test_block_values_need_every_input_of_a_block():
    runs = make_runs(2, lambda b, t, tr, n: 0.6)
    runs = runs[
        ~((runs.split == "random1") & (runs.treatment == "AnB") & (runs.direction == "B->A"))
    ]
    v = block_values(unit_table(runs), diff("BnB", "AnB"), [1])
    assert list(v.index.get_level_values("split")) == ["random0"]


def test_interval_is_scipys_t_interval():
    r = interval([1.0, 2.0, 3.0], 0.95)
    assert r["estimate"] == 2.0 and r["blocks"] == 3
    assert r["ci_high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(interval([1.0], 0.95)["ci_low"])


def test_analyse_writes_the_results_files(tmp_path):
    runs = make_runs(5, lambda b, t, tr, n: 0.6 + 0.01 * b if tr != "RnB" else 0.3)
    write_runs(tmp_path / "runs.csv", runs.to_dict("records"))
    assert set(pd.read_csv(tmp_path / "runs.csv").columns) == set(COLUMNS)
    s = analyse(tmp_path / "runs.csv", tmp_path, L, RULES)
    assert s["blocks"] == {"random": 5}
    from transferability.analysis.claims import COLUMNS as V2
    from transferability.analysis.rules_v1 import CLAIMS_COLUMNS as V1

    assert list(pd.read_csv(tmp_path / "claims.csv").columns) == V2
    assert list(pd.read_csv(tmp_path / "claims_v1.csv").columns) == V1
    for name in (
        "accuracy.csv",
        "gaps.csv",
        "table1.csv",
        "gates.csv",
        "failed.csv",
        "summary.json",
        "metrics.json",
    ):
        assert (tmp_path / name).is_file()
    acc = pd.read_csv(tmp_path / "accuracy.csv")
    base = acc[acc.treatment == "baseB"].iloc[0]
    assert base["mean"] == pytest.approx(0.62) and base["blocks"] == 5


def test_the_pilot_chooses_the_cheapest_converged_budget():
    """Two tasks × two seeds; seed noise: val differs by ±0.5 points between seeds → SD 0.707.
    1000×10 gains 2 points by 20 epochs (not converged); 1000×20 gains 0.3 by 40 but its
    selffer beats it by 1 point; 500×20 gains 0.2 and its selffer gains 0.1: chosen."""
    from transferability.analysis import choose_budget

    val = {(1000, 10): 70.0, (1000, 20): 72.0, (1000, 40): 72.3, (500, 20): 65.0, (500, 40): 65.2}
    gain = {(1000, 10): 0.0, (1000, 20): 1.0, (1000, 40): 0.0, (500, 20): 0.1, (500, 40): 0.0}
    rows = [
        {
            "task": t,
            "seed": s,
            "per_class": p,
            "epochs": e,
            "image_epochs": 5 * p * e,
            "val_acc": (v + (0.5 if s else -0.5)) / 100,
            "selffer_gain": gain[p, e] / 100,
            "seconds": 1.0,
        }
        for (p, e), v in val.items()
        for t in ("A", "B")
        for s in (0, 1)
    ]
    table, choice = choose_budget(pd.DataFrame(rows), max_selffer_gain=0.5)
    assert choice["seed_sd"] == pytest.approx(math.sqrt(0.5))
    t = table.set_index(["per_class", "epochs"])
    assert t.loc[(1000, 10), "doubling_gain"] == pytest.approx(2.0)
    assert not t.loc[(1000, 10), "converged"] and not t.loc[(1000, 20), "converged"]
    assert t.loc[(500, 20), "converged"]
    assert choice["chosen"] == (500, 20)


def test_a_study_without_the_top_cut_leaves_its_claims_not_testable():
    runs = make_runs(5, lambda b, t, tr, n: 0.6 + 0.001 * b)
    c = by_claim(claims(unit_table(runs[runs.n != 4]), L, RULES))
    assert c.loc["specificity_grows", "verdict"] == "not testable"


def test_a_block_counts_only_with_both_directions(tmp_path):
    acc = lambda b, t, tr, n: 0.6 + 0.01 * b + (0.2 if b == 5 else 0)  # noqa: E731
    runs = make_runs(6, acc)
    in_progress = (runs.split == "random5") & (runs.direction == "B->A")
    write_runs(tmp_path / "runs.csv", runs[~in_progress].to_dict("records"))
    s = analyse(tmp_path / "runs.csv", tmp_path, L, RULES)
    assert s["blocks"] == {"random": 5} and s["blocks_in_progress"] == ["random5/s0"]
    base = pd.read_csv(tmp_path / "accuracy.csv").query("treatment == 'baseB'").iloc[0]
    assert base["mean"] == pytest.approx(0.62)  # random5's 0.85 is left out


def test_a_unit_counts_in_a_range_only_with_every_cut_of_it():
    runs = make_runs(2, lambda b, t, tr, n: 0.6)
    runs = runs[~((runs.split == "random1") & (runs.direction == "B->A") & (runs.n == 4))]
    units = unit_table(runs)
    over_all = block_values(units, diff("AnB+", "baseB"), range(1, 5))
    assert list(over_all.index.get_level_values("split")) == ["random0"]
    assert len(block_values(units, diff("AnB+", "baseB"), [1])) == 2


def test_analyse_says_when_no_block_is_whole_yet(tmp_path):
    runs = make_runs(1, lambda b, t, tr, n: 0.6)
    write_runs(tmp_path / "runs.csv", runs[runs.direction != "B->A"].to_dict("records"))
    with pytest.raises(ValueError, match="random0/s0"):
        analyse(tmp_path / "runs.csv", tmp_path, L, RULES, directions=["A->B", "B->A"])


def test_rows_of_a_direction_no_longer_configured_are_left_out(tmp_path):
    runs = make_runs(5, lambda b, t, tr, n: 0.6 + (0.1 if t == "A" and tr != "base" else 0))
    write_runs(tmp_path / "runs.csv", runs.to_dict("records"))
    s = analyse(tmp_path / "runs.csv", tmp_path, L, RULES, directions=["A->B"])
    assert s["blocks"] == {"random": 5}
    gaps = pd.read_csv(tmp_path / "gaps.csv")
    boost = gaps[(gaps.gap == "transfer_boost") & (gaps.n == 1)].estimate.iloc[0]
    assert boost == pytest.approx(0.0)  # B->A's +0.1 (target A) is not averaged in


def test_time_to_accuracy_needs_a_converged_run_and_finds_the_first_budget_near_it():
    """Two tasks × two seeds, ±0.5 points apart (seed SD 0.71). The fast recipe's last
    doubling gains 0.2 (< SD: converged at 74.8); 40 epochs is the first within 0.5 of it
    (74.6; 20 epochs, 74.0, is not). The slow recipe still gains 2 points: not converged, and
    it needs at least its longest budget (80 epochs, the first within 0.5 of 72). A budget
    missing one of the recipe's runs does not count."""
    from transferability.analysis import time_to_accuracy, time_to_level

    curves = {
        "fast": {10: 70.0, 20: 74.0, 40: 74.6, 80: 74.8},
        "slow": {10: 60.0, 20: 66.0, 40: 70.0, 80: 72.0},
        "once": {10: 65.0},  # one budget: nothing to compare it with
    }
    rows = [
        {
            "recipe": r,
            "settings": f"{r} recipe",
            "task": t,
            "seed": s,
            "per_class": 100,
            "epochs": e,
            "image_epochs": 500 * e,
            "val_acc": (v + (0.5 if s else -0.5)) / 100,
            "seconds": e / 10,
        }
        for r, curve in curves.items()
        for e, v in curve.items()
        for t in ("A", "B")
        for s in (0, 1)
    ]
    rows.append({**rows[0], "epochs": 160, "image_epochs": 80000, "val_acc": 0.9})  # one run
    curve, summary = time_to_accuracy(pd.DataFrame(rows), margin=0.5)
    s = summary.set_index("recipe")
    assert s.loc["fast", "seed_sd"] == pytest.approx(math.sqrt(0.5))
    assert s.loc["fast", "converged"] and s.loc["fast", "longest_epochs"] == 80
    assert s.loc["fast", "converged_acc"] == pytest.approx(74.8)
    assert s.loc["fast", "reach_epochs"] == 40 and s.loc["fast", "reach_image_epochs"] == 20000
    assert s.loc["fast", "reach_seconds"] == pytest.approx(4.0)
    assert s.loc["fast", "reach"] == "measured"
    assert not s.loc["slow", "converged"] and math.isnan(s.loc["slow", "converged_acc"])
    assert s.loc["slow", "reach"] == "lower bound" and s.loc["slow", "reach_epochs"] == 80
    assert s.loc["once", "reach"] == "none" and not s.loc["once", "converged"]
    # no budget with every run: nothing to say, and no error
    gappy = pd.DataFrame([r for r in rows if r["recipe"] == "slow"]).assign(recipe="gappy")
    gappy = gappy[(gappy.task == "A") == (gappy.epochs <= 20)]
    g = time_to_accuracy(gappy)[1].iloc[0]
    assert g.reach == "none" and math.isnan(g.longest_epochs)
    with pytest.raises(ValueError, match="recipe fast, task A, seed 0 at 10 epochs:"):
        time_to_accuracy(pd.DataFrame([*rows, rows[0]]))
    # across recipes: the fast one comes within 0.5 of the slow one's best (72) at 20 epochs;
    # the slow one never comes within 0.5 of the fast one's converged 74.8
    to_slow = time_to_level(curve, s.loc["slow", "level"]).set_index("recipe")
    assert to_slow.loc["fast", "epochs"] == 20 and to_slow.loc["slow", "epochs"] == 80
    to_fast = time_to_level(curve, s.loc["fast", "level"]).set_index("recipe")
    assert to_fast.loc["fast", "epochs"] == 40 and math.isnan(to_fast.loc["slow", "epochs"])
    assert s.loc["slow", "last_doubling_gain"] == pytest.approx(2.0)
    c = curve.set_index(["recipe", "epochs"])
    assert c.loc[("fast", 20), "doubling_gain"] == pytest.approx(4.0)
    assert ("fast", 160) not in c.index


def test_report_facts_name_the_random_drop_peak_and_the_pilot_choice():
    from transferability.analysis.facts import report_facts

    runs = make_runs(5, lambda b, t, tr, n: 0.6 + 0.01 * b).assign(seconds=10.0, train_images=1250)
    gaps = pd.DataFrame(
        {
            "split_kind": "random",
            "gap": "random_frozen_drop",
            "n": [1, 2, 3, 4],
            "estimate": [0.04, 0.1, 0.33, 0.17],
        }
    )
    pilot = pd.DataFrame({"per_class": [250, 500], "epochs": [80, 40], "chosen": [False, True]})
    f = report_facts(runs, gaps, {"random": 5}, L, pilot_budgets=pilot)
    assert f["random_drop"] == {"peak_n": 3, "peak": 0.33, "top": 0.17, "peaks_below_top": True}
    assert f["pilot"]["chosen"] == [500, 40] and f["pilot"]["seconds"] is None
    assert f["train_seconds"] == 10.0 * len(runs) and f["df"] == {"random": 4}
    assert f["base_acc_min"] == pytest.approx(0.6) and f["base_acc_max"] == pytest.approx(0.64)
    assert f["study_per_class"] == 250
