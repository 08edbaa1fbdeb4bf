"""Every network is one MLflow run, tagged so that it can be found, under one parent run."""

import json
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy import text

from transferability import report
from transferability.diagnostics import COLUMNS as DIAGNOSTICS_COLUMNS
from transferability.io import md5_file
from transferability.models import build, load_checkpoint, save_checkpoint
from transferability.networks import Networks, plan
from transferability.report import log_study_results
from transferability.runner import read_runs, run_study, write_runs
from transferability.splits import make_splits
from transferability.tracking import provenance, store
from transferability.tracking.provenance import git_commit, repo_root
from transferability.tracking.store import EXPERIMENT, ensure_store, tracking_uri
from transferability.tracking.tracker import Tracker
from transferability.tracking.ui import runs_link, wait_until_up

TAGS = {
    "network",
    "split",
    "split_kind",
    "direction",
    "treatment",
    "n",
    "seed",
    "arch",
    "source_network",
    "source_run",
    "git_commit",
    "data_md5",
    "checkpoint",
    "checkpoint_md5",
    "mlflow.parentRunId",
    "mlflow.source.name",
    "mlflow.source.type",
}
SOURCE = {"mlflow.source.name", "mlflow.source.type", "dvc.experiment", "dvc.stage"}


@pytest.fixture(autouse=True)
def fresh_source_tags():
    """source_tags() is read once a process: each test sees its own environment."""
    provenance.source_tags.cache_clear()
    yield
    provenance.source_tags.cache_clear()


def with_data(cfg, tmp_path):
    """cfg whose prepared data set is a small file of its own (not the repository's)."""
    data = tmp_path / "prepared" / "dataset.npz"
    data.parent.mkdir(parents=True, exist_ok=True)
    np.savez(data, x=np.arange(10))
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"prepared": str(data)})})


def children(client):
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    return parents, [r for r in runs if r.data.tags.get("role") != "study"]


def test_one_run_per_row_with_every_tag_and_source_links(
    tiny_study, tmp_path, mlflow_store, monkeypatch
):
    cfg, splits, ds = tiny_study
    cfg = with_data(cfg, tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "cited-quay")  # what `dvc exp run` gives a stage
    monkeypatch.setenv("DVC_STAGE", "train_base")
    runs_csv = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs_csv, log=lambda *_: None)
    rows = read_runs(runs_csv)
    client = MlflowClient(mlflow_store)
    parents, nets = children(client)
    assert len(parents) == 1
    md5 = md5_file(cfg.data.prepared)
    for run in (*parents, *nets):  # MLflow's source tags, the UI's "Version" and "Dataset"
        tags = run.data.tags
        assert set(tags) >= SOURCE, SOURCE - set(tags)
        assert tags["dvc.experiment"] == "cited-quay" and tags["dvc.stage"] == "train_base"
        assert tags.get("mlflow.source.git.commit", "") == git_commit()
        assert tags["git_commit"] in (git_commit(), "-")
        (data,) = run.inputs.dataset_inputs
        assert (data.dataset.name, data.dataset.digest) == ("CIFAR-10 prepared", md5)
        assert json.loads(data.dataset.source)["uri"] == Path(cfg.data.prepared).as_posix()
        assert {t.key: t.value for t in data.tags} == {"mlflow.data.context": "training"}
    bases = {r.info.run_id for r in nets if r.data.tags["treatment"] == "base"}
    models = client.search_logged_models([parents[0].info.experiment_id])
    assert {m.source_run_id for m in models} == bases  # one model per base, none for the rest
    assert all(m.status == "READY" for m in models)
    # registered: one model per base, named by study and network, its version from that run
    registered = {v.name: v.run_id for v in client.search_model_versions()}
    by_network = {r.data.tags["network"]: r.info.run_id for r in nets}
    assert registered == {
        "reference." + n.replace("/", "."): by_network[n] for n in by_network if "base" in n
    }
    exp = client.get_experiment(parents[0].info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's runs view
    view = json.loads(exp.tags["mlflow.sharedViewState.study"])  # its columns, shared by URL
    assert {"attributes.`Version`", "metrics.`final_test_acc`"} <= set(view["selectedColumns"])
    # `transferability ui` links that view, by the experiment's id
    link = runs_link("http://127.0.0.1:5000", mlflow_store)
    assert link == (
        f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
        "?workflowType=machine_learning&viewStateShareKey=study"
    )
    assert sorted(r.data.tags["network"] for r in nets) == sorted(r["network"] for r in rows)
    by_id = {r.info.run_id: r for r in nets}
    for run in nets:
        assert set(run.data.tags) >= TAGS, TAGS - set(run.data.tags)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, cfg.train.epochs + 1))
        assert "final_test_acc" in run.data.metrics and "train.lr" in run.data.params
        # the UI's run name starts with the network's own name; its page says where the
        # checkpoint is, and so does an artifact of every run, transfers included
        network = run.data.tags["network"]
        assert run.info.run_name == f"{network.rsplit('/', 1)[1]} · {network.rsplit('/', 1)[0]}"
        assert run.data.tags["checkpoint"] in run.data.tags["mlflow.note.content"]
        pointer = json.loads(
            Path(
                client.download_artifacts(run.info.run_id, "checkpoint.json", str(tmp_path))
            ).read_text()
        )
        assert pointer["checkpoint"] == run.data.tags["checkpoint"]
        assert pointer["checkpoint_md5"] == md5_file(run.data.tags["checkpoint"])
        if run.data.tags["treatment"] in ("BnB", "BnB+", "AnB", "AnB+"):
            source = by_id[run.data.tags["source_run"]]
            assert source.data.tags["network"] == run.data.tags["source_network"]
            assert source.data.tags["treatment"] == "base"


def networks_of(client) -> list[str]:
    return sorted(r.data.tags["network"] for r in children(client)[1])


def test_a_narrower_study_adds_and_only_prune_removes_runs(tiny_study, tmp_path, mlflow_store):
    cfg, splits, ds = tiny_study
    runs_csv = tmp_path / "runs.csv"
    quiet = {"log": lambda *_: None}
    no_track = cfg.model_copy(update={"study": cfg.study.model_copy(update={"mlflow": False})})
    run_study(no_track, splits, ds, runs_csv, which="bases", **quiet)  # trained untracked
    run_study(cfg, splits, ds, runs_csv, **quiet)  # backfills the bases, logs the rest
    fewer = cfg.model_copy(update={"study": cfg.study.model_copy(update={"cuts": [1]})})
    run_study(fewer, splits, ds, runs_csv, **quiet)  # cut 3 is not in this study
    client = MlflowClient(mlflow_store)
    every, kept = ({j.network for j in plan(c, splits)} for c in (cfg, fewer))
    assert kept < every
    assert networks_of(client) == sorted(every)  # one run per network, cut 3's kept
    assert {r["network"] for r in read_runs(runs_csv)} <= every  # never a row without its run
    tracker = Tracker(fewer, Networks(fewer, splits, ds), plan(fewer, splits))
    assert len(children(client)[0]) == 1  # the narrower study is the same study
    assert tracker.prune(kept) == sorted(every - kept)  # explicit, and only then
    assert networks_of(client) == sorted(kept)


def diagnostics_rows(split: str) -> list[dict]:
    """A block of the diagnostics stage's table: a reset layer, a stitch, a 3-point path."""
    block = {"split": split, "seed": 0, "seconds": 1.5}
    nan = float("nan")
    stitch = {"direction": "A->B", "task": "B", "n": 2, "diagnostic": "stitching"}
    path = {"direction": "A->B", "task": "B", "n": 2, "diagnostic": "interpolation"}
    return [
        block
        | {"direction": "", "task": "A", "n": 1, "diagnostic": "reinit", "variant": "init"}
        | {"alpha": nan, "accuracy": 0.3, "val_accuracy": 0.31, "reference": 0.6, "value": 0.3},
        block
        | stitch
        | {"variant": "trained", "alpha": nan, "accuracy": 0.55, "val_accuracy": nan}
        | {"reference": 0.6, "value": 0.05},
        *(
            block
            | path
            | {"variant": "to BnB+", "alpha": a, "accuracy": acc, "val_accuracy": acc}
            | {"reference": 0.61, "value": v}
            for a, acc, v in [(0.0, 0.6, 0.0), (0.5, 0.4, 0.21), (1.0, 0.62, 0.0)]
        ),
    ]


def test_diagnostics_are_one_run_per_block_beside_its_networks(
    tiny_study, mlflow_store, monkeypatch
):
    cfg, splits, ds = tiny_study
    jobs = plan(cfg, splits)
    tracker = Tracker(cfg, Networks(cfg, splits, ds), jobs)
    rows = diagnostics_rows("random0") + diagnostics_rows("random1")
    table = pd.DataFrame(rows, columns=DIAGNOSTICS_COLUMNS)
    first = tracker.log_diagnostics(table, "fp32")
    ids = tracker.log_diagnostics(table, "fp32")  # a rerun replaces a block's run
    client = MlflowClient(mlflow_store)
    diag = [r for r in children(client)[1] if r.data.tags.get("role") == "diagnostics"]
    assert list(ids) == ["random0/s0", "random1/s0"]
    assert sorted(r.info.run_id for r in diag) == sorted(ids.values())
    assert not set(first.values()) & set(ids.values())
    run = client.get_run(ids["random0/s0"])
    tags, m = run.data.tags, run.data.metrics
    assert (tags["block"], tags["mlflow.parentRunId"]) == ("random0/s0", tracker.parent_id)
    assert run.info.run_name == "diagnostics · random0/s0" and run.info.status == "FINISHED"
    assert tags["diagnostics"] == "interpolation,reinit,stitching" and tags["precision"] == "fp32"
    assert m["stitching/A_to_B/n2/trained/accuracy"] == 0.55
    assert "stitching/A_to_B/n2/trained/val_accuracy" not in m  # NaN: not a metric
    assert m["reinit/task_A/n1/init/value"] == 0.3 and m["seconds"] == 7.5
    path = "interpolation/A_to_B/n2/to_BnBplus/accuracy"
    history = client.get_metric_history(run.info.run_id, path)
    assert [(h.step, h.value) for h in history] == [(0, 0.6), (1, 0.4), (2, 0.62)]
    assert run.data.params["beyond.stitch_epochs"] == str(cfg.beyond.stitch_epochs)
    [artifact] = client.list_artifacts(run.info.run_id)
    logged = pd.read_csv(client.download_artifacts(run.info.run_id, artifact.path))
    assert artifact.path == "diagnostics.csv" and len(logged) == 5
    # a failed rerun leaves the block's earlier run, and no half-logged one
    monkeypatch.setattr(tracker.client, "log_text", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tracker.log_diagnostics(table, "fp32")
    diag = [r for r in children(client)[1] if r.data.tags.get("role") == "diagnostics"]
    assert sorted(r.info.run_id for r in diag) == sorted(ids.values())
    # prune keeps the diagnostics of the study's blocks and drops the others'
    networks = {j.network for j in jobs}
    assert tracker.prune(networks, dry_run=True) == ["diagnostics · random1/s0"]
    tracker.prune(networks)
    assert [r.info.run_id for r in children(client)[1]] == [ids["random0/s0"]]


def test_a_study_trained_block_by_block_gets_each_blocks_diagnostics_under_its_parent(
    tiny_study, tmp_path
):
    """by_block.sh trains a study one block at a time: each block's networks are under a parent
    run of their own, and its diagnostics go there; a block with no logged bases is left out."""
    cfg, _, ds = tiny_study
    one, two = (make_splits(ds.classes, seeds, False) for seeds in ([0], [0, 1]))
    block = Networks(cfg, one, ds)
    trained = Tracker(cfg, block, plan(cfg, one))  # the block as by_block.sh trains it
    for job in plan(cfg, one)[:2]:
        row = base_row(block, job, tmp_path) | {"fingerprint": block.fingerprint(job)}
        trained.log_network(job, row, [])
    study = Tracker(cfg, Networks(cfg, two, ds), plan(cfg, two), create=False)
    assert study.parent_id == "" and study.parent_id != trained.parent_id
    rows = diagnostics_rows("random0") + diagnostics_rows("random1")
    ids = study.log_diagnostics(pd.DataFrame(rows, columns=DIAGNOSTICS_COLUMNS), "fp32")
    assert list(ids) == ["random0/s0"]  # random1's bases were never logged
    run = study.client.get_run(ids["random0/s0"])
    assert run.data.tags["mlflow.parentRunId"] == trained.parent_id


def test_two_studies_of_the_same_networks_each_get_their_own_numbers(tiny_study, tmp_path):
    """pipelines/beyond retrains the reference's first blocks: the same networks (name and
    fingerprint) under two studies' parent runs; each study's summary goes to its own."""
    cfg, _, ds = tiny_study
    one, two = (make_splits(ds.classes, seeds, False) for seeds in ([0], [0, 1]))
    parents = {}
    for folder, splits in (("results", two), ("results/beyond", one)):
        study = cfg.model_copy(
            update={"study": cfg.study.model_copy(update={"results_dir": str(tmp_path / folder)})}
        )
        networks = Networks(study, splits, ds)
        tracker = Tracker(study, networks, plan(study, splits))
        job = plan(study, splits)[0]
        tracker.log_network(job, base_row(networks, job, tmp_path), [])
        parents[folder] = tracker.parent_id
    assert len(set(parents.values())) == 2
    for folder in parents:
        files = tiny_results(tmp_path / folder, ["random0/s0/baseA"])
        assert log_study_results(tmp_path / folder, files) == [parents[folder]]


@pytest.fixture
def tracker(tiny_study):
    cfg, splits, ds = tiny_study
    return Tracker(cfg, Networks(cfg, splits, ds), plan(cfg, splits))


def parent_status(tracker) -> str:
    return tracker.client.get_run(tracker.parent_id).info.status


def test_the_parent_run_is_never_left_running(tracker):
    assert parent_status(tracker) == "RUNNING"
    with pytest.raises(KeyboardInterrupt), tracker:
        raise KeyboardInterrupt
    assert parent_status(tracker) == "KILLED"
    tracker.finish(status="FAILED")  # the call runner.py makes
    assert parent_status(tracker) == "FAILED"
    with tracker:  # finished already: leaving changes nothing
        pass
    assert parent_status(tracker) == "FAILED"
    tracker.finished = ""
    with pytest.raises(RuntimeError), tracker:
        raise RuntimeError("a network failed")
    assert parent_status(tracker) == "FAILED"
    tracker.finish(status="FINISHED")
    assert parent_status(tracker) == "FINISHED"
    with pytest.raises(ValueError):
        tracker.finish(status="RUNNING")


def test_sqlite_waits_the_uris_timeout_not_mlflows_20_s(tmp_path):
    """MLflow sets PRAGMA busy_timeout = 20000 in every session; the URI's timeout wins."""
    for query, ms in (("?timeout=7", 7000), ("", store.BUSY_TIMEOUT_S * 1000)):
        client, _ = ensure_store(f"sqlite:///{tmp_path / 'busy.db'}{query}")
        with client.client._tracking_client.store.ManagedSessionMaker() as session:
            assert session.execute(text("PRAGMA busy_timeout")).scalar() == ms


@contextmanager
def locked(db, seconds: float):
    """Another connection holds an exclusive lock on `db` for `seconds`."""
    held = threading.Event()

    def hold():
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        yield
    finally:
        thread.join()


def test_a_locked_store_is_waited_for_not_fatal(tiny_study, tmp_path, monkeypatch):
    """SQLite gives up after its busy timeout (1 s here, 60 s by default, not MLflow's 20 s);
    the tracker then retries with backoff (RETRY_FOR_S, 5 min by default) and loses nothing."""
    db = tmp_path / "locked.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}?timeout=1")
    cfg, splits, ds = tiny_study
    jobs = plan(cfg, splits)
    tracker = Tracker(cfg, Networks(cfg, splits, ds), jobs)
    row = {
        "checkpoint": str(tmp_path / "none.pt"),
        "seconds": 1.0,
        "fingerprint": "f",
        "test_acc": 0.5,
        "train_acc": 0.6,
    }
    history = [{"epoch": 1, "train_loss": 1.0}]
    monkeypatch.setattr(store, "RETRY_FOR_S", 0.0)
    with locked(db, 3):
        start = time.monotonic()
        with pytest.raises(MlflowException, match="locked"):  # no retries: fails at 1 s, not 20
            tracker.log_network(jobs[0], row, history)
        assert time.monotonic() - start < 2.5
    monkeypatch.setattr(store, "RETRY_FOR_S", 30.0)
    with locked(db, 3):
        start = time.monotonic()
        run_id = tracker.log_network(jobs[0], row, history)  # waits out the lock, then logs
        assert time.monotonic() - start >= 2.5
    assert tracker.run_id_of(jobs[0].network) == run_id
    assert tracker.client.get_run(run_id).info.status == "FINISHED"


def test_two_first_starts_at_once_share_one_fresh_store(tmp_path):
    """Two processes creating one fresh store at once race in MLflow's schema migrations."""
    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from transferability.tracking.store import ensure_store\n"
        "d = Path(sys.argv[1]); (d / ('ready' + sys.argv[2])).touch()\n"
        "while len(list(d.glob('ready*'))) < 2: time.sleep(0.005)\n"  # start together
        "print(ensure_store(sys.argv[3])[1])\n"
    )
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}?timeout=60"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(i), uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment


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
        "from transferability.tracking.store import tracking_uri\n"
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
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        for _ in range(workers)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    exp = MlflowClient(env_uri).get_experiment_by_name("x")
    assert len(MlflowClient(env_uri).search_runs([exp.experiment_id], max_results=100)) == 45


# ---------------------------------------------------------------------- models, results, system


def base_row(networks, job, tmp_path) -> dict:
    """A finished base network without training it: a fresh network's checkpoint and its row."""
    net = build(networks.net_config(5), seed=0)
    path = tmp_path / "models" / f"{job.network}.pt"
    save_checkpoint(path, net, {"network": job.network, "classes": list("abcde")})
    return {
        "network": job.network,
        "checkpoint": str(path),
        "seconds": 1.0,
        "fingerprint": "f",
        "test_acc": 0.5,
        "train_acc": 0.6,
    }


def test_a_base_is_logged_as_a_pytorch_model_that_loads_as_the_checkpoint(tiny_study, tmp_path):
    import mlflow.pytorch

    cfg, splits, ds = tiny_study
    networks, jobs = Networks(cfg, splits, ds), plan(cfg, splits)
    tracker = Tracker(cfg, networks, jobs)
    base = jobs[0]
    assert base.treatment == "base"
    row = base_row(networks, base, tmp_path)
    run_id = tracker.log_network(base, row, [{"epoch": 1, "train_loss": 1.0}])
    (out,) = tracker.client.get_run(run_id).outputs.model_outputs
    model = tracker.client.get_logged_model(out.model_id)
    assert (model.source_run_id, model.status, model.experiment_id) == (
        run_id,
        "READY",
        tracker.experiment_id,  # the study's experiment, not MLflow's default one
    )
    loaded = mlflow.pytorch.load_model(model.model_uri)
    reference, _ = load_checkpoint(row["checkpoint"])
    x = torch.randn(4, 3, 32, 32)
    assert type(loaded) is type(reference) and not loaded.training
    assert torch.equal(loaded(x), reference.eval()(x))
    # logged again, the network replaces its run and its model
    tracker.log_network(base, row, [{"epoch": 1, "train_loss": 1.0}])
    models = tracker.client.search_logged_models([tracker.experiment_id])
    assert [m.source_run_id for m in models] == [tracker.run_id_of(base.network)]
    (version,) = tracker.client.search_model_versions()  # and its registered version
    assert (version.name, version.run_id) == (
        tracker.registered_name(base),
        tracker.run_id_of(base.network),
    )
    assert mlflow.pytorch.load_model(f"models:/{version.name}/{version.version}")(x).shape == (
        4,
        reference.cfg.num_classes,
    )


def test_a_network_whose_model_fails_to_log_leaves_no_run(tiny_study, tmp_path, monkeypatch):
    """The runner logs a network that has no run next time: a half-logged one would stay."""
    cfg, splits, ds = tiny_study
    networks, jobs = Networks(cfg, splits, ds), plan(cfg, splits)
    tracker = Tracker(cfg, networks, jobs)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(tracker, "_log_model", broken)
    with pytest.raises(OSError, match="disk full"):
        tracker.log_network(jobs[0], base_row(networks, jobs[0], tmp_path), [])
    assert tracker.run_id_of(jobs[0].network) == ""


def tiny_results(results: Path, networks: list[str]) -> list[Path]:
    """A results folder as the aggregate and report stages leave it; returns the files to log."""
    results.mkdir(parents=True, exist_ok=True)
    write_runs(results / "runs.csv", [{"network": n, "fingerprint": "f"} for n in networks])
    metrics = {
        "networks": len(networks),
        "base_test_acc_mean": 0.61,
        "gaps": {"random": {"specificity": {"n1": 0.0076, "n3": None}}},
        "table1": {"random": {"all": {"over_baseB": 0.0266, "over_BnB_plus": -0.014}}},
        "claims": {"specificity_grows": "supported"},
    }
    (results / "metrics.json").write_text(json.dumps(metrics))
    (results / "claims.csv").write_text(
        "claim,statistic,estimate,ci_low,ci_high,blocks,verdict,rule\n"
        "specificity_grows,spec(n=4) − spec(n=1),9.6,7.1,12.0,5,supported,above 0\n"
        "converged_top_selffer,B4B − baseB,,,,0,not testable,fewer than 5 blocks\n"
    )
    (results / "table1.csv").write_text("split_kind,cuts,over_baseB_estimate\nrandom,all,2.66\n")
    files = [results / "claims.csv", results / "table1.csv", results / "metrics.json"]
    for name in ("fig_gaps.png", "fig_gaps.pdf", "report.ipynb", "paper.pdf"):
        (results / name).write_bytes(b"x")
        files.append(results / name)
    return files


def test_the_parent_run_carries_the_studys_results(tiny_study, tmp_path, capsys):
    cfg, splits, ds = tiny_study
    networks, jobs = Networks(cfg, splits, ds), plan(cfg, splits)
    tracker = Tracker(cfg, networks, jobs)
    for job in jobs[:2]:
        tracker.log_network(job, base_row(networks, job, tmp_path), [])
    files = tiny_results(tmp_path / "results", [j.network for j in jobs[:2]])
    missing = tmp_path / "report" / "build" / "paper.pdf"
    assert log_study_results(tmp_path / "results", [*files, missing]) == [tracker.parent_id]
    assert f"not found: {missing}" in capsys.readouterr().out
    run = tracker.client.get_run(tracker.parent_id)
    m, tags = run.data.metrics, run.data.tags
    assert m["base_test_acc_mean"] == 0.61 and m["networks"] == 2
    assert m["gaps.random.specificity.n1"] == 0.0076 and "gaps.random.specificity.n3" not in m
    assert m["table1.random.all.over_BnB_plus"] == -0.014
    assert (m["claim.specificity_grows.estimate"], m["claim.specificity_grows.ci_low"]) == (
        9.6,
        7.1,
    )
    assert "claim.converged_top_selffer.estimate" not in m  # not estimable: no metric
    assert tags["claim.specificity_grows"] == "supported"
    assert tags["claim.converged_top_selffer"] == "not testable"
    listed = {
        a.path
        for d in ("figures", "results", "report")
        for a in tracker.client.list_artifacts(tracker.parent_id, d)
    }
    assert listed == {
        "figures/fig_gaps.png",
        "figures/fig_gaps.pdf",
        "results/claims.csv",
        "results/table1.csv",
        "results/metrics.json",
        "report/report.ipynb",
        "report/paper.pdf",
    }
    # the artifacts lie beside the store, not in the working directory of the stage
    assert run.info.artifact_uri.startswith(str(tmp_path / "mlruns"))


def test_no_store_or_no_parent_run_is_a_note_not_a_failure(tmp_path, monkeypatch, capsys):
    files = tiny_results(tmp_path / "results", ["random0/s0/baseA"])
    assert log_study_results(tmp_path / "results", files) == []  # no store: none is made
    assert "no store" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists()
    ensure_store()
    assert log_study_results(tmp_path / "results", files) == []  # a store, but no such network
    assert "no parent run" in capsys.readouterr().out

    def broken(uri):
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(report, "ensure_store", broken)  # any other error: a note too
    assert log_study_results(tmp_path / "results", files) == []
    assert "disk I/O error" in capsys.readouterr().out


MONITORS = []


class FakeMonitor:
    """Stands in for MLflow's SystemMetricsMonitor (no GPU here)."""

    def __init__(self, run_id, resume_logging=False, tracking_uri=None):
        self.run_id, self.resume, self.uri, self.state = run_id, resume_logging, tracking_uri, ""
        MONITORS.append(self)

    def start(self):
        self.state = "started"

    def finish(self):
        self.state = "finished"


def test_system_metrics_are_logged_to_the_parent_run_only_with_cuda(tracker, monkeypatch):
    from mlflow.system_metrics import system_metrics_monitor

    monkeypatch.setattr(system_metrics_monitor, "SystemMetricsMonitor", FakeMonitor)
    MONITORS.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with tracker:
        assert tracker.monitor is None
    assert MONITORS == []
    assert parent_status(tracker) == "FINISHED"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    tracker.finished = ""  # a later stage of the study: the parent runs again while it trains
    with tracker:
        assert parent_status(tracker) == "RUNNING"
        (monitor,) = MONITORS
        assert (monitor.run_id, monitor.resume, monitor.state) == (
            tracker.parent_id,
            True,
            "started",
        )
        assert monitor.uri == tracker.uri
    assert monitor.state == "finished" and tracker.monitor is None
    assert parent_status(tracker) == "FINISHED"


def test_ui_links_the_experiments_list_while_no_study_ran_and_names_a_server_that_died(tmp_path):
    empty = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        runs_link("http://h:1", empty) == "http://h:1/#/experiments?workflowType=machine_learning"
    )
    assert not (tmp_path / "mlflow.db").exists()  # looking creates no store
    died = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    died.wait()
    with pytest.raises(RuntimeError, match="exited with status 3"):
        wait_until_up("http://127.0.0.1:9/health", timeout_s=5, server=died)
