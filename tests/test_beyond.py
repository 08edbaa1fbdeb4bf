"""Beyond the paper: linear CKA, the target-size sweep's plan and its claim."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ortho_group

from transferability.analysis.beyond import cka_table, datasize_table, datasize_units
from transferability.analysis.rules_v1 import datasize_claim
from transferability.config import AnalysisConfig
from transferability.models import NetConfig, build
from transferability.networks import Job, Networks, plan, plan_datasize
from transferability.runner import read_runs, run_study
from transferability.similarity import (
    CKA_COLUMNS,
    cka_from_grams,
    gram,
    layer_grams,
    layer_similarity,
    linear_cka,
)

from .factories import sweep_rows

RULES = AnalysisConfig()
rng = np.random.default_rng(0)


# ---------------------------------------------------------------------- linear CKA


def test_cka_of_a_representation_with_itself_is_one():
    x = rng.normal(size=(200, 30))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = rng.normal(size=(300, 20)), rng.normal(size=(300, 12))
    y = y + x[:, :12]  # related, so that CKA is far from 0 and 1
    c = linear_cka(x, y)
    q = ortho_group.rvs(20, random_state=1)
    assert 0.2 < c < 0.9
    assert linear_cka(x @ q, y) == pytest.approx(c, abs=1e-12)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(c, abs=1e-12)
    assert linear_cka(x + 3.0, y) == pytest.approx(c, abs=1e-12)  # centred first


def test_cka_equals_a_hand_computed_value():
    # one feature each: CKA is the squared correlation. Centred: (−1, 0, 1) and (0, −1, 1):
    # correlation 1 / (√2 √2) = 1/2, so CKA = 1/4
    assert linear_cka([[1.0], [2.0], [3.0]], [[1.0], [0.0], [2.0]]) == pytest.approx(0.25)
    # two features against one: YᵀX = (1, 2), so ‖YᵀX‖² = 5; ‖XᵀX‖ = ‖[[2, 1], [1, 2]]‖ = √10;
    # ‖YᵀY‖ = 2: CKA = 5 / (2√10)
    x = [[-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]]
    y = [[0.0], [-1.0], [1.0]]
    assert linear_cka(x, y) == pytest.approx(5 / (2 * math.sqrt(10)))


def test_cka_is_stable_in_float64_for_thousands_of_examples():
    x = rng.normal(size=(3000, 40)) + 1e4  # a large offset: centring must not lose digits
    y = x[:, :25] @ rng.normal(size=(25, 25)) + rng.normal(size=(3000, 25))
    feature_form = linear_cka(x, y)
    gram_form = cka_from_grams(gram(x), gram(y))  # the n × n form wide layers use
    assert feature_form == pytest.approx(gram_form, abs=1e-9)
    assert linear_cka(x - 1e4, y) == pytest.approx(feature_form, abs=1e-9)


def test_cka_refuses_different_examples():
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))


def test_layer_grams_give_the_cka_of_each_layers_output():
    a = build(NetConfig("cifar5", 5, 0.25), 1)
    b = build(NetConfig("cifar5", 5, 0.25), 2)
    x = torch.randn(60, 3, 32, 32)
    ka, kb = layer_grams(a, x, batch=25), layer_grams(b, x, batch=25)
    assert len(ka) == a.num_layers
    h, g = x, x
    with torch.no_grad():
        for i in range(a.num_layers):
            h, g = a.layers[i](h), b.layers[i](g)
            ref = linear_cka(h.reshape(60, -1).numpy(), g.reshape(60, -1).numpy())
            assert cka_from_grams(ka[i], kb[i]) == pytest.approx(ref, abs=1e-5)
    assert cka_from_grams(ka[0], ka[0]) == pytest.approx(1.0)


# ---------------------------------------------------------------------- the sweep's plan


def test_the_sweep_copies_the_full_source_base_and_a_same_size_selffer(tiny_study):
    cfg, splits, ds = tiny_study
    cfg = cfg.model_copy(
        update={"beyond": cfg.beyond.model_copy(update={"datasize_per_class": [4, 8]})}
    )
    jobs = plan_datasize(cfg, splits)
    # per size: baseA and baseB, then BnB+ and AnB+ at cuts 1 and 3 in both directions
    assert len(jobs) == 2 * (2 + 2 * 2 * 2)
    names = {j.network: j for j in jobs}
    anb = names["random0/s0/size4/A3B+"]
    bnb = names["random0/s0/size4/B3B+"]
    assert anb.source.network == "random0/s0/baseA"  # the study's base, trained on all of A
    assert bnb.source.network == "random0/s0/size4/baseB"  # the same-size base of B
    networks = Networks(cfg, splits, ds)
    assert "datasize/size4" in networks.checkpoint(anb).as_posix()
    own = Job("random0", "random", 0, "A->B", "A", "B", "AnB+", 3)
    assert "per_class" not in own.identity  # the study's networks keep their fingerprints
    assert networks.fingerprint(own) != networks.fingerprint(anb)
    assert not {j.network for j in jobs} & {j.network for j in plan(cfg, splits)}


def test_the_sweep_trains_on_the_smaller_sets_and_refuses_without_the_study_bases(
    tiny_study, tmp_path
):
    cfg, splits, ds = tiny_study
    cfg = cfg.model_copy(
        update={
            "study": cfg.study.model_copy(update={"mlflow": False}),
            "beyond": cfg.beyond.model_copy(
                update={"datasize_per_class": [4], "datasize_cuts": [1], "cka_images": 20}
            ),
        }
    )
    quiet = {"log": lambda *_: None}
    with pytest.raises(FileNotFoundError, match=r"baseA\.pt"):
        run_study(cfg, splits, ds, tmp_path / "sweep.csv", which="datasize", **quiet)
    run_study(cfg, splits, ds, tmp_path / "runs.csv", **quiet)
    rows = run_study(cfg, splits, ds, tmp_path / "sweep.csv", which="datasize", **quiet)
    assert len(rows) == 2 + 2 * 2
    assert {int(r["train_images"]) for r in rows} == {4 * 5}  # 4 images of each of 5 classes
    assert len(read_runs(tmp_path / "runs.csv")) == 2 + 2 * 2 * 5  # the study's table untouched

    cka = layer_similarity(cfg, splits, ds, log=lambda *_: None, out=tmp_path / "cka.csv")
    kept = (tmp_path / "cka.csv").read_bytes()
    shutil.move(cfg.study.models_dir, tmp_path / "elsewhere")  # a later session, another machine
    msgs = []
    again = layer_similarity(cfg, splits, ds, log=msgs.append, out=tmp_path / "cka.csv")
    assert msgs[0].startswith("random0/s0: done before, kept") and len(again) == len(cka)
    assert (tmp_path / "cka.csv").read_bytes() == kept
    # baseA vs baseB at 5 layers; AnB+ and BnB+ at cuts 1, 3, both directions, 5 layers each
    assert len(cka) == 5 + 2 * 2 * 2 * 5
    assert cka.cka.between(0, 1 + 1e-9).all()
    copied = cka[(cka.comparison == "BnB+ vs its source") & (cka.layer <= cka.n)]
    assert (copied.cka > 0.5).all()  # one epoch of fine-tuning leaves copied layers close


# ---------------------------------------------------------------------- the sweep's analysis


def test_the_boost_over_the_selffer_is_compared_across_sizes_inside_blocks():
    boost = lambda b, size: {25: 0.05 + 0.01 * b, 100: 0.02, 250: 0.01}[size]  # noqa: E731
    study_rows, sweep = sweep_rows(5, boost)
    du = datasize_units(study_rows, sweep, [1, 3])
    assert sorted(du.per_class.unique()) == [25, 100, 250]
    table = datasize_table(du, RULES).set_index(["per_class", "cuts", "boost"])
    assert table.loc[(25, "mean", "over_BnB_plus"), "estimate"] == pytest.approx(0.07)
    assert table.loc[(250, "n3", "over_BnB_plus"), "estimate"] == pytest.approx(0.01)
    assert table.loc[(25, "mean", "over_BnB_plus"), "blocks"] == 5
    c = datasize_claim(du, RULES)
    # 25 vs 250 images per class: (0.05 + 0.01 b) − 0.01 over b = 0..4 → 6 points
    assert c["estimate"] == pytest.approx(6.0) and c["verdict"] == "supported"
    assert "25 vs 250" in c["rule"]


def test_the_sweep_claim_needs_enough_blocks_and_a_sweep():
    study_rows, sweep = sweep_rows(3, lambda b, size: 0.05 if size == 25 else 0.0)
    c = datasize_claim(datasize_units(study_rows, sweep, [1, 3]), RULES)
    assert c["verdict"] == "not testable" and c["blocks"] == 3
    assert datasize_claim(None, RULES)["verdict"] == "not testable"


def test_cka_table_averages_directions_inside_blocks_then_intervals():
    rows = []
    for b in range(5):
        rows.append((f"random{b}", 0, "", "baseA vs baseB", 0, 1, 0.9 + 0.01 * b))
        for d, v in (("A->B", 0.5), ("B->A", 0.7)):
            rows.append((f"random{b}", 0, d, "AnB+ vs its source", 2, 1, v))
    rows.append(("random5", 0, "A->B", "AnB+ vs its source", 2, 1, 0.0))  # one direction only
    t = cka_table(
        pd.DataFrame(
            rows, columns=["split", "seed", "direction", "comparison", "n", "layer", "cka"]
        ),
        RULES,
    ).set_index("comparison")
    assert t.loc["AnB+ vs its source", "estimate"] == pytest.approx(0.6)
    assert t.loc["AnB+ vs its source", "blocks"] == 5
    assert t.loc["baseA vs baseB", "estimate"] == pytest.approx(0.92)
    assert t.loc["baseA vs baseB", "ci_low"] < 0.92 < t.loc["baseA vs baseB", "ci_high"]


def test_cka_table_reads_the_bases_row_back_from_csv(tmp_path):
    rows = [(f"random{b}", 0, "", "baseA vs baseB", 0, 1, 0.9, 20) for b in range(2)]
    pd.DataFrame(rows, columns=CKA_COLUMNS).to_csv(tmp_path / "cka.csv", index=False)
    t = cka_table(pd.read_csv(tmp_path / "cka.csv"), RULES)
    assert t.estimate.tolist() == [pytest.approx(0.9)] and t.blocks.tolist() == [2]


def test_a_constant_representation_has_no_cka():
    x = rng.normal(size=(50, 4))
    assert math.isnan(linear_cka(np.full((50, 3), 0.7), x))
    assert math.isnan(linear_cka(np.full((50, 300), 0.7), x))  # the wide (Gram) form too


def test_the_sweep_needs_both_directions_and_a_base_at_each_size():
    study_rows, sweep = sweep_rows(5, lambda b, size: 0.3 if size == 25 else 0.0)
    one_way = sweep[~((sweep.train_images == 125) & (sweep.direction == "B->A"))]
    du = datasize_units(study_rows, one_way, [1, 3], ["A->B", "B->A"])
    assert 25 not in set(du.per_class)
    assert datasize_claim(du, RULES)["verdict"] == "not testable"
    # a failed base of size 25 in block 0: that block is left out at that size, nothing raises
    no_base = sweep[~((sweep.network == "size25/random0/s0/baseBA") & (sweep.treatment == "base"))]
    no_base = no_base[~no_base.network.str.startswith("size25/random0/s0/base")]
    du = datasize_units(study_rows, no_base, [1, 3], ["A->B", "B->A"])
    assert set(du[du.per_class == 25].split) == {f"random{b}" for b in range(1, 5)}
    assert datasize_claim(du, RULES)["blocks"] == 4


def test_the_sweep_claim_compares_the_same_cuts_at_both_sizes():
    study_rows, sweep = sweep_rows(5, lambda b, size: 0.05 if size == 25 else 0.0)
    sweep = sweep[~((sweep.train_images == 125) & (sweep.n == 3))]
    c = datasize_claim(datasize_units(study_rows, sweep, [1, 3]), RULES)
    assert c["verdict"] == "not testable" and "every cut" in c["rule"]


def test_cka_table_drops_a_block_with_a_missing_direction_value():
    rows = []
    for b in range(5):
        for d in ("A->B", "B->A"):
            v = math.nan if (b, d) == (4, "B->A") else {"A->B": 0.5, "B->A": 0.7}[d]
            rows.append((f"random{b}", 0, d, "AnB+ vs its source", 2, 1, v, 20))
    t = cka_table(pd.DataFrame(rows, columns=CKA_COLUMNS), RULES, ["A->B", "B->A"])
    assert t.estimate.tolist() == [pytest.approx(0.6)] and t.blocks.tolist() == [4]
