"""Every network is one MLflow run, tagged so that it can be found, under one parent run."""

import pytest
from mlflow.tracking import MlflowClient

from transferability.study import read_runs, run_study
from transferability.tracking import EXPERIMENT, repo_root, tracking_uri

TAGS = {"network", "split", "split_kind", "direction", "treatment", "n", "seed", "arch",
        "source_network", "source_run", "git_commit", "data_md5", "checkpoint",
        "checkpoint_md5", "mlflow.parentRunId"}  # fmt: skip


def children(client):
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    return parents, [r for r in runs if r.data.tags.get("role") != "study"]


def test_one_run_per_row_with_every_tag_and_source_links(tiny_study, tmp_path, mlflow_store):
    cfg, splits, ds = tiny_study
    runs_csv = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs_csv, log=lambda *_: None)
    rows = read_runs(runs_csv)
    client = MlflowClient(mlflow_store)
    parents, nets = children(client)
    assert len(parents) == 1
    exp = client.get_experiment(parents[0].info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's runs view
    assert sorted(r.data.tags["network"] for r in nets) == sorted(r["network"] for r in rows)
    by_id = {r.info.run_id: r for r in nets}
    for run in nets:
        assert set(run.data.tags) >= TAGS, TAGS - set(run.data.tags)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, cfg.train.epochs + 1))
        assert "final_test_acc" in run.data.metrics and "train.lr" in run.data.params
        if run.data.tags["treatment"] in ("BnB", "BnB+", "AnB", "AnB+"):
            source = by_id[run.data.tags["source_run"]]
            assert source.data.tags["network"] == run.data.tags["source_network"]
            assert source.data.tags["treatment"] == "base"


def test_resumed_and_extended_studies_keep_one_run_per_row(tiny_study, tmp_path, mlflow_store):
    cfg, splits, ds = tiny_study
    runs_csv = tmp_path / "runs.csv"
    quiet = {"log": lambda *_: None}
    no_track = cfg.model_copy(update={"study": cfg.study.model_copy(update={"mlflow": False})})
    run_study(no_track, splits, ds, runs_csv, which="bases", **quiet)  # trained untracked
    run_study(cfg, splits, ds, runs_csv, **quiet)  # backfills the bases, logs the rest
    fewer = cfg.model_copy(update={"study": cfg.study.model_copy(update={"cuts": [1]})})
    run_study(fewer, splits, ds, runs_csv, **quiet)  # cut 3 dropped from the study
    rows = read_runs(runs_csv)
    _, nets = children(MlflowClient(mlflow_store))
    assert sorted(r.data.tags["network"] for r in nets) == sorted(r["network"] for r in rows)
    assert len(rows) == 12


def test_store_is_found_from_the_repo_root_even_in_a_dvc_temp_copy(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    deep = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc"
    (deep / "src").mkdir(parents=True)
    (deep / "dvc.yaml").write_text("stages: {}\n")
    assert repo_root(deep / "src") == tmp_path
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(deep / "src")
    assert tracking_uri().startswith(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize("workers", [3])
def test_several_processes_logging_at_once_do_not_lock(tmp_path, workers):
    import subprocess
    import sys

    code = (
        "import sys\nfrom mlflow.tracking import MlflowClient\n"
        "from transferability.tracking import tracking_uri\n"
        "c = MlflowClient(tracking_uri())\n"
        "e = c.get_experiment_by_name('x')\n"
        "for i in range(15):\n"
        "    r = c.create_run(e.experiment_id)\n"
        "    c.log_metric(r.info.run_id, 'm', i)\n"
    )
    env_uri = f"sqlite:///{tmp_path / 'm.db'}?timeout=60"
    MlflowClient(env_uri).create_experiment("x")  # store and experiment exist before fan-out
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": env_uri}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
             for _ in range(workers)]  # fmt: skip
    errors = [p.communicate()[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    exp = MlflowClient(env_uri).get_experiment_by_name("x")
    assert len(MlflowClient(env_uri).search_runs([exp.experiment_id], max_results=100)) == 45
