"""Beyond the paper, part 2: the four diagnostics on small constructed networks and data."""

import math
import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from transferability import data as data_mod
from transferability.analysis.diagnostics import COLUMNS as ANALYSIS_COLUMNS
from transferability.config import BeyondConfig, TrainConfig
from transferability.diagnostics import (
    COLUMNS,
    Stitched,
    barrier,
    interpolated,
    interpolation_rows,
    reinit_rows,
    reinitialised,
    scale_matched,
    stitching_rows,
    transfusion_rows,
)
from transferability.models import NetConfig, build
from transferability.networks import Networks, base_job, derive_seed
from transferability.tracking.store import EXPERIMENT
from transferability.train import DeviceTask, machine, train

from .factories import learnable_dataset, run, tiny_project

NET = NetConfig("cifar5", 5, width=0.25)
RECIPE = TrainConfig(epochs=2, batch_size=32, progress=False, eval_batch_size=500)


@pytest.fixture(scope="module")
def task() -> DeviceTask:
    ds = learnable_dataset(n_train=40, n_test=20)
    view = data_mod.task_view(ds, ds.classes[:5], 32, None, 8)
    return DeviceTask.from_task(view, torch.device("cpu"))


@pytest.fixture(scope="module")
def trained(task) -> tuple[nn.Module, nn.Module]:
    """Two networks trained on the task from different draws (A and B of the tests)."""
    nets = []
    for seed in (1, 2):
        net = build(NET, seed)
        train(net, task, RECIPE.model_copy(update={"epochs": 8}), seed=seed)
        nets.append(net.eval())
    return tuple(nets)


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_stage_and_the_analysis_agree_on_the_columns():
    assert COLUMNS == ANALYSIS_COLUMNS


# ---------------------------------------------------------------------- stitching


def test_a_stitch_between_identical_networks_is_lossless(trained, task):
    net = trained[0]
    x = task.normalise(task.test_x)
    with torch.no_grad():
        logits = net(x)
        for n in range(1, net.num_layers):  # maps (1×1 conv) at n ≤ 3, vectors (linear) at 4
            assert torch.equal(Stitched(net, net, n).eval()(x), logits)  # exactly, at identity
    rows = stitching_rows(net, net, [1, 3, 4], task, RECIPE, BeyondConfig(stitch_epochs=2), 0)
    assert len(rows) == 3 * 2 and set(rows.variant) == {"identity", "trained"}
    assert (rows[rows.variant == "identity"].value == 0).all()
    trained_rows = rows[rows.variant == "trained"]
    # training the stitch loses nothing (one test image is 0.01): it may only add an affine map
    assert trained_rows.value.max() <= 0.01
    assert (rows.reference == trained_rows.reference.iloc[0]).all()


def test_only_the_stitch_trains_and_the_networks_stay_as_they_were(trained, task):
    a, b = trained
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (a, b)]
    model = Stitched(a, b, 2)
    assert [p for p in model.parameters() if p.requires_grad] == list(model.stitch.parameters())
    assert isinstance(model.stitch, nn.Conv2d) and model.stitch.kernel_size == (1, 1)
    assert isinstance(Stitched(a, b, 4).stitch, nn.Linear)
    rows = stitching_rows(a, b, [2], task, RECIPE, BeyondConfig(stitch_epochs=1), 0)
    for m, sd in zip((a, b), before, strict=True):
        assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
        assert all(p.requires_grad for p in m.parameters())
    assert rows.value.tolist() == pytest.approx((rows.reference - rows.accuracy).tolist())


def test_stitching_refuses_another_architecture_and_a_cut_out_of_range(trained):
    with pytest.raises(ValueError, match="cannot stitch"):
        Stitched(trained[0], build(NetConfig("cifar5", 5, width=0.5), 0), 1)
    with pytest.raises(ValueError, match="out of range"):
        Stitched(trained[0], trained[1], 5)


# ---------------------------------------------------------------------- re-initialisation


def test_a_reset_layer_holds_exactly_the_checkpoints_initial_weights(tiny_study, task):
    """The initial draw is rebuilt from the base's init seed as the study derives it."""
    cfg, splits, ds = tiny_study
    networks = Networks(cfg, splits, ds)
    job = base_job("random0", "random", 0, "B")
    assert networks.init_seed(job) == derive_seed("init", "random0", 0, "B")
    start, _ = networks.build(job)  # the base before training
    model = build(start.cfg, networks.init_seed(job))
    assert same(model, start)
    trained_net = build(start.cfg, networks.init_seed(job))
    train(trained_net, task, RECIPE, seed=0)
    for layer in range(1, trained_net.num_layers + 1):
        reset = reinitialised(trained_net, layer, build(start.cfg, networks.init_seed(job)))
        for k in range(trained_net.num_layers):
            want = start if k == layer - 1 else trained_net
            assert same(reset.layers[k], want.layers[k])  # bit for bit
    assert not same(trained_net.layers[0], start.layers[0])  # training moved it


def test_reinit_rows_reset_each_layer_to_both_draws(trained, task):
    net = trained[0]
    rows = reinit_rows(net, build(NET, 1), build(NET, 99), task, 500)
    assert len(rows) == 5 * 2
    assert rows.n.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert set(rows.variant) == {"init", "fresh"}
    assert rows.value.tolist() == pytest.approx((rows.reference - rows.accuracy).tolist())
    same_net = reinit_rows(net, net, net, task, 500)  # "resetting" to itself changes nothing
    assert (same_net.value == 0).all()


# ---------------------------------------------------------------------- interpolation


def test_interpolation_between_a_network_and_itself_is_flat(trained, task):
    net = trained[0]
    rows = interpolation_rows(net, net, task, 11)
    assert rows.alpha.tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert rows.accuracy.nunique() == 1 and (rows.value == 0).all() and barrier(rows) == 0
    assert same(interpolated(net, net, 0.37), net)  # lerp: θ0 all along


def test_interpolation_ends_at_each_network_and_moves_only_the_named_layers(trained, task):
    a, b = trained
    assert same(interpolated(a, b, 0.0), a) and same(interpolated(a, b, 1.0), b)
    half = interpolated(a, b, 0.5, layers=[1, 2])
    w = (a.layers[0][0].weight + b.layers[0][0].weight) / 2
    assert torch.allclose(half.layers[0][0].weight, w, atol=1e-6)
    assert all(same(half.layers[k], a.layers[k]) for k in (2, 3, 4))
    rows = interpolation_rows(a, b, task, 5)
    lo, hi = rows.accuracy.iloc[0], rows.accuracy.iloc[-1]
    line = [(1 - t) * lo + t * hi for t in rows.alpha]
    assert rows.reference.tolist() == pytest.approx(line)
    assert rows.value.iloc[0] == pytest.approx(0) and rows.value.iloc[-1] == pytest.approx(0)
    assert barrier(rows) == pytest.approx(max(rows.reference - rows.accuracy))


# ---------------------------------------------------------------------- weight scale alone


def test_scale_matched_weights_have_each_channels_mean_and_sd_but_are_new():
    gen = torch.Generator().manual_seed(0)
    conv, fc = nn.Conv2d(512, 16, 3), nn.Linear(4096, 8)
    with torch.no_grad():
        for m in (conv, fc):
            rows = len(m.weight)
            mean, sd = torch.linspace(-0.5, 0.5, rows), torch.linspace(0.01, 0.3, rows)
            shape = (rows,) + (1,) * (m.weight.dim() - 1)
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * sd.view(shape))
            m.weight.add_(mean.view(shape))
            m.bias.copy_(torch.randn(rows, generator=gen) * 0.1 + 0.2)
    for m in (conv, fc):
        source = m.weight.detach().reshape(len(m.weight), -1).clone()
        bias = m.bias.detach().clone()
        scale_matched(nn.Sequential(m, nn.ReLU()), torch.Generator().manual_seed(1))
        drawn = m.weight.detach().reshape(len(m.weight), -1)
        k = drawn.shape[1]  # 4,608 and 4,096 draws per channel
        sd = source.std(1)
        assert ((drawn.mean(1) - source.mean(1)).abs() < 5 * sd / math.sqrt(k)).all()
        assert ((drawn.std(1) / sd - 1).abs() < 0.06).all()
        # not the source's weights: as far from them as two independent draws (√2 SD)
        assert ((drawn - source).std(1) / sd > 1.3).all()
        assert abs(m.bias.mean() - bias.mean()) < 0.2 and not torch.equal(m.bias, bias)


def test_transfusion_redraws_the_copied_layers_and_fine_tunes_like_anb_plus(trained, task):
    a, b = trained
    start = build(NET, 7)
    for k in range(2):
        start.layers[k].load_state_dict(a.layers[k].state_dict())  # as AnB+ copies n = 2
    rows = transfusion_rows(start, 2, b, task, RECIPE, seed=0, draw_seed=3)
    assert len(rows) == 1 and rows.variant.iloc[0] == "scale" and rows.n.iloc[0] == 2
    assert rows.reference.iloc[0] == pytest.approx(train_free_acc(b, task))
    assert not same(start.layers[0], a.layers[0])  # redrawn, then fine-tuned
    assert 0 <= rows.accuracy.iloc[0] <= 1 and rows.seconds.iloc[0] > 0


def train_free_acc(net, task) -> float:
    from transferability.train import evaluate

    return evaluate(net, task, task.test_x, task.test_y, 500)


# ---------------------------------------------------------------------- cost


def test_each_diagnostic_costs_about_what_the_estimates_assume(trained, task, capsys):
    """Times each diagnostic on this tiny task (printed with -s; the report's estimates scale
    them): a generous bound only, so that a slow machine does not fail it."""
    a, b = trained
    timings = {}
    for name, fn in {
        "stitching (1 cut, 2 epochs)": lambda: stitching_rows(
            a, b, [2], task, RECIPE, BeyondConfig(stitch_epochs=2), 0
        ),
        "reinit (5 layers x 2)": lambda: reinit_rows(a, build(NET, 1), build(NET, 2), task, 500),
        "interpolation (11 points)": lambda: interpolation_rows(a, b, task, 11),
    }.items():
        t = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t
    print({k: round(v, 3) for k, v in timings.items()})
    assert all(v < 60 for v in timings.values())


# ---------------------------------------------------------------------- the command, end to end


def test_the_diagnostics_command_on_a_tiny_study(monkeypatch, capsys, tmp_path, mlflow_store):
    tiny_project(monkeypatch, tmp_path)
    for step in ("prepare", "split", "train-bases", "transfer"):
        code, _out, err = run(monkeypatch, capsys, step)
        assert code == 0, err
    every = ["--set", "beyond.diagnostics=[interpolation,reinit,stitching,transfusion]"]
    fast = [*every, "--set", "beyond.stitch_epochs=1", "--set", "beyond.interpolation_points=3"]
    code, out, err = run(monkeypatch, capsys, "diagnostics", *fast)
    assert code == 0, err
    assert "random0/s0: interpolation, reinit, stitching, transfusion" in out
    assert "MLflow: 1 block(s) of diagnostics logged beside their networks" in out
    d = pd.read_csv(tmp_path / "results/diagnostics.csv")
    assert list(d.columns) == [*COLUMNS, "machine", "precision", "block_key"]
    per_direction = 2 + 2 * 3 + 1  # stitching (2 variants), 2 paths × 3 points, transfusion
    assert len(d) == 2 * 5 * 2 + 2 * per_direction  # reinit: 2 bases × 5 layers × 2 draws
    assert set(d[d.diagnostic != "reinit"].n) == {2}  # the study's cut
    assert d.accuracy.between(0, 1).all() and d.value.notna().all()
    # the transfusion's reference is AnB+ as its row records it (the same machine, precision)
    runs = pd.read_csv(tmp_path / "results/runs.csv").set_index("network")
    tf = d[(d.diagnostic == "transfusion") & (d.direction == "A->B")].iloc[0]
    assert tf.reference == pytest.approx(runs.loc["random0/s0/A2B+", "test_acc"], abs=1e-6)
    # a rerun (a stage stopped after this block, or a later session on another machine, whose
    # checkpoints are gone) keeps the finished block instead of computing it again, and writes
    # the same table; other settings compute it anew
    table = (tmp_path / "results/diagnostics.csv").read_bytes()
    shutil.move(tmp_path / "models", tmp_path / "elsewhere")
    code, out, err = run(monkeypatch, capsys, "diagnostics", *fast)
    assert code == 0 and "random0/s0: done before, kept" in out, err
    lr = ["--set", "beyond.stitch_lr=0.01"]  # a block to compute, whose checkpoints are gone:
    code, out, err = run(monkeypatch, capsys, "diagnostics", *fast, *lr)
    assert code == 2 and "to read are not on this machine (random0/s0/baseA" in err, err
    assert (tmp_path / "results/diagnostics.csv").read_bytes() == table  # refused before writing
    shutil.move(tmp_path / "elsewhere", tmp_path / "models")
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [r.info.run_name for r in runs if r.data.tags.get("role") == "diagnostics"] == [
        "diagnostics · random0/s0"
    ]  # the rerun's replaced the first
    assert (tmp_path / "results/diagnostics.csv").read_bytes() == table  # `seconds` too
    code, out, err = run(monkeypatch, capsys, "diagnostics", *fast, *lr)
    assert code == 0 and "done before" not in out
    code, out, err = run(monkeypatch, capsys, "diagnostics", *fast)  # back: computed again
    assert code == 0 and "done before" not in out
    code, out, err = run(monkeypatch, capsys, "diagnostics", *fast, "--block", "random1/s0")
    assert code == 2 and "--block: random1/s0 not among the study's blocks (random0/s0)" in err
    again = pd.read_csv(tmp_path / "results/diagnostics.csv")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), d.drop(columns="seconds"))
    trained_in = set(pd.read_csv(tmp_path / "results/runs.csv").precision)  # where they ran
    assert (again.machine == machine()).all() and set(again.precision) == trained_in
    code, _out, err = run(monkeypatch, capsys, "analyze")
    assert code == 0, err
    claims = pd.read_csv(tmp_path / "results/claims.csv").set_index("claim")
    diag_claims = claims[claims.family == "diagnostics"]
    assert len(diag_claims) == 4 and (diag_claims.verdict == "not testable").all()  # one block
    summary = pd.read_csv(tmp_path / "results/diagnostics_summary.csv")
    assert set(summary.diagnostic) == {"stitching", "reinit", "interpolation", "transfusion"}
    code, _out, err = run(
        monkeypatch, capsys, "diagnostics", *every, "--set", "beyond.diagnostics_cuts=[1]"
    )
    assert code == 2 and "beyond.diagnostics_cuts: [1] are not cuts of the study" in err


def test_by_block_computes_each_blocks_cka_and_diagnostics_after_its_networks(
    monkeypatch, capsys, tmp_path
):
    """pipelines/by_block.sh: a block's checkpoint-reading tables are computed right after its
    networks (while its checkpoints are here), the other blocks' rows kept."""
    import subprocess
    import sys
    from pathlib import Path

    tiny_project(monkeypatch, tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(
        params.read_text().replace("random_seeds: [0]", "random_seeds: [0, 1]")
        + "beyond: {blocks: 2, diagnostics: [reinit], cka_images: 20}\n"
    )
    params.write_text(
        params.read_text().replace("study: {cuts: [2]}", "study: {cuts: [2], mlflow: false}")
    )
    for step in ("prepare", "split"):
        code, _out, err = run(monkeypatch, capsys, step)
        assert code == 0, err
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRANSFERABILITY": str(Path(sys.executable).with_name("transferability")),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(
        ["bash", str(root / "pipelines/by_block.sh"), "params.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout
    assert log.index("== block random1") > log.index("random0/s0: reinit")  # block by block
    assert "not computed yet (--block): random1/s0" in log  # after random0's networks
    assert "random0/s0: done before, kept" in log  # random1's run keeps random0's rows
    for table in ("diagnostics.csv", "cka.csv"):
        t = pd.read_csv(tmp_path / "results" / table)
        assert set(t.split) == {"random0", "random1"} and t.block_key.notna().all()
