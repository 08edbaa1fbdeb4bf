"""Rows and MLflow runs do not depend on where the networks trained."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import transferability.networks as networks_mod
from transferability import data
from transferability.runner import read_runs, run_study
from transferability.tracking.store import EXPERIMENT

QUIET = {"log": lambda *_: None}
SAME = [
    "network",
    "treatment",
    "n",
    "test_acc",
    "train_acc",
    "train_loss",
    "checkpoint",
    "fingerprint",
    "source_network",
]


def with_study(cfg, tmp_path, name, **study):
    study = {"models_dir": str(tmp_path / name / "models"), **study}
    return cfg.model_copy(
        update={
            "study": cfg.study.model_copy(update=study),
            "data": cfg.data.model_copy(update={"prepared": str(tmp_path / "dataset.npz")}),
        }
    )


def networks(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {
        r.data.tags["network"]: (r.data.tags["seed"], r.data.metrics["final_test_acc"])
        for r in runs
        if r.data.tags.get("role") != "study"
    }


def run(cfg, splits, ds, tmp_path, name, uri, monkeypatch, **study):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{uri}-{name}")
    rows = run_study(
        with_study(cfg, tmp_path, name, **study), splits, ds, tmp_path / name / "runs.csv", **QUIET
    )
    return rows, networks(f"{uri}-{name}")


@pytest.mark.parametrize(
    "executor",
    [
        {"workers": 2},
        pytest.param({"executor": "ray"}, marks=pytest.mark.slow),
    ],
)
def test_executors_give_the_same_rows_and_runs_as_one_process(
    tiny_study, tmp_path, mlflow_store, monkeypatch, executor
):
    if executor.get("executor") == "ray":
        pytest.importorskip("ray")
    cfg, splits, ds = tiny_study
    data.save(ds, tmp_path / "dataset.npz")
    serial, serial_runs = run(cfg, splits, ds, tmp_path, "one", mlflow_store, monkeypatch)
    other, other_runs = run(
        cfg, splits, ds, tmp_path, "other", mlflow_store, monkeypatch, **executor
    )
    strip = [{k: r[k] for k in SAME if k != "checkpoint"} for r in serial]
    assert strip == [{k: r[k] for k in SAME if k != "checkpoint"} for r in other]
    assert serial_runs == other_runs and len(serial_runs) == 22
    # bases train before the transfers that copy them: each copied this run's base
    md5 = {r["network"]: r["checkpoint_md5"] for r in other}
    copies = [r for r in other if r["source_network"]]
    assert copies and all(r["source_md5"] == md5[r["source_network"]] for r in copies)


def test_a_failing_network_is_retried_then_reported_without_losing_the_others(
    tiny_study, tmp_path, monkeypatch
):
    cfg, splits, ds = tiny_study
    cfg = with_study(cfg, tmp_path, "f", treatments=["AnB"], retries=1)
    calls = {}
    real = networks_mod.Networks.run

    def flaky(self, job, *args):
        calls[job.name] = calls.get(job.name, 0) + 1
        if job.name == "A1B" or (job.name == "B1A" and calls[job.name] == 1):
            raise RuntimeError("simulated failure")
        return real(self, job, *args)

    monkeypatch.setattr(networks_mod.Networks, "run", flaky)
    with pytest.raises(RuntimeError, match=r"(?s)1 network\(s\) failed .*A1B: RuntimeError"):
        run_study(cfg, splits, ds, tmp_path / "runs.csv", **QUIET)
    assert calls["A1B"] == 2 and calls["B1A"] == 2  # retried once
    done = {r["network"].split("/")[-1] for r in read_runs(tmp_path / "runs.csv")}
    assert done == {"baseA", "baseB", "A3B", "B1A", "B3A"}


def test_the_diagnostics_in_two_workers_give_the_rows_of_one_process(tiny_study, tmp_path):
    import shutil

    from transferability.diagnostics import network_diagnostics
    from transferability.splits import make_splits

    cfg, _, ds = tiny_study
    splits = make_splits(ds.classes, [0, 1], False)  # two random blocks
    data.save(ds, tmp_path / "dataset.npz")
    cfg = with_study(cfg, tmp_path, "d", treatments=["BnB+", "AnB+"], mlflow=False, cuts=[2])
    run_study(cfg, splits, ds, tmp_path / "runs.csv", **QUIET)
    fast = {"stitch_epochs": 1, "interpolation_points": 3}
    diagnostics = ["interpolation", "reinit", "stitching", "transfusion"]
    cfg = cfg.model_copy(
        update={"beyond": cfg.beyond.model_copy(update={"diagnostics": diagnostics, **fast})}
    )
    tables = []
    for workers in (1, 2):
        shutil.rmtree(tmp_path / "d/models/.partial", ignore_errors=True)  # computed afresh
        here = cfg.model_copy(update={"study": cfg.study.model_copy(update={"workers": workers})})
        msgs = []
        tables.append(network_diagnostics(here, splits, ds, log=msgs.append))
        assert len(msgs) == 2 and not any("done before" in m for m in msgs)
    one, two = (t.drop(columns="seconds") for t in tables)
    assert set(one.split) == {"random0", "random1"}
    pd.testing.assert_frame_equal(one, two)
