"""Beyond the paper, part 2: the diagnostics summarised over blocks, their claims, and the
paper's claims untouched by them."""

import numpy as np
import pandas as pd
import pytest

from transferability.analysis import analyse, unit_table
from transferability.analysis.claims import REGISTRY, evaluate
from transferability.analysis.diagnostics import COLUMNS, diagnostics_table, read, unit_values
from transferability.analysis.summary import claims_context
from transferability.config import AnalysisConfig
from transferability.runner import write_runs

from .factories import L, diag_rows, make_runs

RULES = AnalysisConfig()
DIAGNOSTICS = [k for k, c in REGISTRY.items() if c.family == "diagnostics"]


def runs(blocks=5):
    """baseB = BnB = 0.8, AnB 3 points below BnB at every cut: specificity 3 points."""
    return make_runs(blocks, lambda b, t, tr, n: 0.77 if tr == "AnB" else 0.8)


def claims_of(diag, blocks=5):
    c, _ = evaluate(claims_context(unit_table(runs(blocks)), L, RULES, diagnostics=diag))
    return c.set_index("claim")


def test_every_diagnostic_has_one_claim_and_a_delta():
    assert len(DIAGNOSTICS) == 4 and set(DIAGNOSTICS) <= set(RULES.sesoi)
    assert all(REGISTRY[k].needs == "diagnostics" for k in DIAGNOSTICS)


def test_the_summary_averages_directions_inside_blocks_then_intervals():
    t = diagnostics_table(diag_rows(), RULES, ["A->B", "B->A"])
    t = t.set_index(["diagnostic", "variant", "statistic", "n"])
    stitched = t.loc[("stitching", "trained", "value", 2)]
    # 0.005 + 0.001 b + (0 or 0.002), averaged over directions then over b = 0..4
    assert stitched.estimate == pytest.approx(0.005 + 0.002 + 0.001) and stitched.blocks == 5
    assert stitched.ci_low < stitched.estimate < stitched.ci_high
    barrier = t.loc[("interpolation", "to source", "barrier", 3)]
    assert barrier.estimate == pytest.approx(0.001 * 3) and np.isnan(barrier.alpha)
    at_half = t.xs(("interpolation", "to BnB+", "value", 1)).set_index("alpha")
    assert at_half.loc[0.5, "estimate"] == pytest.approx(0.201)
    labels = t.xs(("reinit", "init", "value")).label
    assert labels[1] == "critical" and labels[4] == "robust" and labels[2] == "robust"
    assert (t.xs(("reinit", "init", "value")).blocks == 5).all()  # two bases in each block


def test_a_block_lacking_a_direction_or_a_base_gives_no_number():
    diag = diag_rows()
    diag = diag[~((diag.split == "random4") & (diag.direction == "B->A"))]
    diag = diag[~((diag.split == "random3") & (diag.task == "B") & (diag.diagnostic == "reinit"))]
    t = diagnostics_table(diag, RULES, ["A->B", "B->A"]).set_index(
        ["diagnostic", "variant", "statistic", "n"]
    )
    assert t.loc[("stitching", "trained", "value", 1), "blocks"] == 4
    assert (t.xs(("reinit", "init", "value")).blocks == 4).all()


def test_the_diagnostics_claims_read_supported_on_clear_constructed_effects():
    c = claims_of(diag_rows())
    assert c.loc[DIAGNOSTICS, "family"].eq("diagnostics").all()
    # specificity 3 points − penalty (0.5 + 0.2 + 0.1) points
    assert c.loc["stitch_penalty_below_specificity", "estimate"] == pytest.approx(2.2)
    assert c.loc["reinit_first_layer_critical", "estimate"] == pytest.approx(30 + 2 - 1)
    assert c.loc["finetune_stays_in_source_basin", "estimate"] == pytest.approx(0.3)
    assert c.loc["reuse_beats_scale", "estimate"] == pytest.approx(2 + 0.4 + 0.1)
    assert (c.loc[DIAGNOSTICS, "verdict"] == "supported").all()
    assert (c.loc[DIAGNOSTICS, "verdict_holm"] == "supported").all()


def test_the_diagnostics_claims_read_against_the_statement_when_it_fails():
    c = claims_of(diag_rows(penalty=0.06, bump=0.02, drop1=-0.1, edge=-0.05))
    assert c.loc["stitch_penalty_below_specificity", "verdict"] == "reversed"
    assert c.loc["reinit_first_layer_critical", "verdict"] == "reversed"
    assert c.loc["finetune_stays_in_source_basin", "verdict"] == "contradicted"
    assert c.loc["reuse_beats_scale", "verdict"] == "reversed"


def test_too_few_blocks_or_missing_diagnostics_are_not_testable():
    c = claims_of(diag_rows(blocks=3), blocks=3)
    assert (c.loc[DIAGNOSTICS, "verdict"] == "not testable").all()
    only_reinit = diag_rows()
    only_reinit = only_reinit[only_reinit.diagnostic == "reinit"]
    c = claims_of(only_reinit)
    assert c.loc["reinit_first_layer_critical", "verdict"] == "supported"
    for k in ("stitch_penalty_below_specificity", "reuse_beats_scale"):
        assert c.loc[k, "verdict"] == "not testable" and "no " in c.loc[k, "rule"]


def test_the_other_claims_are_the_same_with_or_without_the_diagnostics():
    without = claims_of(None)
    assert not set(DIAGNOSTICS) & set(without.index)  # not listed before their stage ran
    with_ = claims_of(diag_rows()).drop(DIAGNOSTICS)
    pd.testing.assert_frame_equal(without, with_)  # their own Holm family: nothing else moves


def test_analyse_writes_the_summary_and_leaves_claims_csv_as_it_was(tmp_path):
    write_runs(tmp_path / "runs.csv", runs().to_dict("records"))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    analyse(tmp_path / "runs.csv", tmp_path / "a", L, RULES)
    diag = tmp_path / "diagnostics.csv"
    diag_rows().to_csv(diag, index=False)
    s = analyse(tmp_path / "runs.csv", tmp_path / "b", L, RULES, diagnostics_path=diag)
    assert s["claims"]["reuse_beats_scale"]["verdict"] == "supported"
    before = pd.read_csv(tmp_path / "a/claims.csv")
    after = pd.read_csv(tmp_path / "b/claims.csv")
    assert after.claim.tolist() == before.claim.tolist() + DIAGNOSTICS
    summary = pd.read_csv(tmp_path / "b/diagnostics_summary.csv")
    assert set(summary.diagnostic) == {"stitching", "reinit", "interpolation", "transfusion"}
    assert pd.read_csv(tmp_path / "a/diagnostics_summary.csv").empty
    assert read(diag).direction.tolist().count("") == 5 * 2 * L * 2  # "" reads back as ""
    assert len(unit_values(read(diag))) == 5 * 2 * (L - 1)


def test_a_study_that_runs_no_diagnostics_has_no_diagnostics_claims(tmp_path):
    """beyond.diagnostics: [] writes a table with no rows (the reference's): as without one."""
    write_runs(tmp_path / "runs.csv", runs().to_dict("records"))
    empty = tmp_path / "diagnostics.csv"
    pd.DataFrame(columns=COLUMNS).to_csv(empty, index=False)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    analyse(tmp_path / "runs.csv", tmp_path / "a", L, RULES)
    analyse(tmp_path / "runs.csv", tmp_path / "b", L, RULES, diagnostics_path=empty)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a/claims.csv"), pd.read_csv(tmp_path / "b/claims.csv")
    )


def test_the_stitching_figure_pairs_specificity_and_penalty_over_the_same_units():
    from transferability.analysis.diagnostics import stitching_pairs

    # AnB varies by block, direction and cut, so that a wrong pairing changes the numbers
    def acc(b, t, tr, n):  # t: the target task (B->A's is A)
        return 0.8 - (0.01 * n + 0.003 * b + 0.002 * (t == "A")) * (tr == "AnB")

    def pairs_of(runs_table, diag):
        units = claims_context(unit_table(runs_table), L, RULES, diagnostics=diag).random
        return stitching_pairs(units, diag, RULES).set_index(["variant", "n"])

    diag = diag_rows()
    pairs = pairs_of(make_runs(5, acc), diag)
    assert sorted(set(pairs.index.get_level_values("n"))) == list(range(1, L))
    # the paired penalty is the summary's penalty where every unit has its pair
    table = diagnostics_table(diag, RULES).set_index(["diagnostic", "variant", "statistic", "n"])
    for n in range(1, L):
        penalty = table.loc[("stitching", "trained", "value", n)]
        assert pairs.loc[("penalty", n)].estimate == pytest.approx(penalty.estimate)
    # the claim's estimate is the mean of the paired differences over the middle cuts
    middle = [pairs.loc[("specificity − penalty", n)].estimate for n in range(2, L - 1)]
    c, _ = evaluate(claims_context(unit_table(make_runs(5, acc)), L, RULES, diagnostics=diag))
    claim = c.set_index("claim").loc["stitch_penalty_below_specificity"]
    assert 100 * np.mean(middle) == pytest.approx(claim.estimate)
    spec = pairs.loc[("specificity", 2)]  # BnB − AnB = 0.02 + 0.003 b + 0.001 (two directions)
    assert spec.estimate == pytest.approx(0.02 + 0.006 + 0.001) and spec.blocks == 5
    # a block the diagnostics did not reach is in neither half; one lacking AnB at a cut, at it
    runs_gap = make_runs(5, acc)
    drop = (runs_gap.split == "random1") & (runs_gap.treatment == "AnB") & (runs_gap.n == 2)
    pairs = pairs_of(
        runs_gap[~(drop & (runs_gap.target_task == "A"))], diag[diag.split != "random4"]
    )
    for variant in ("penalty", "specificity", "specificity − penalty"):
        assert pairs.loc[(variant, 2), "blocks"] == 3 and pairs.loc[(variant, 3), "blocks"] == 4
    assert RULES.min_blocks == 5 and np.isnan(pairs.loc[("specificity − penalty", 3)].ci_low)
