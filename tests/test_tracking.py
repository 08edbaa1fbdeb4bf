"""Every network is one MLflow run, tagged so that it can be found, under one parent run."""

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy import text

from transferability import tracking
from transferability.runner import read_runs, run_study
from transferability.study import Study, plan
from transferability.tracking import EXPERIMENT, Tracker, ensure_store, repo_root, tracking_uri

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
}


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
    tracker = Tracker(fewer, Study(fewer, splits, ds), plan(fewer, splits))
    assert len(children(client)[0]) == 1  # the narrower study is the same study
    assert tracker.prune(kept) == sorted(every - kept)  # explicit, and only then
    assert networks_of(client) == sorted(kept)


@pytest.fixture
def tracker(tiny_study):
    cfg, splits, ds = tiny_study
    return Tracker(cfg, Study(cfg, splits, ds), plan(cfg, splits))


def parent_status(tracker) -> str:
    return tracker.client.get_run(tracker.parent_id).info.status


def test_the_parent_run_is_never_left_running(tracker):
    assert parent_status(tracker) == "RUNNING"
    with pytest.raises(KeyboardInterrupt), tracker:
        raise KeyboardInterrupt
    assert parent_status(tracker) == "KILLED"
    tracker.finish(failed=True)  # the call runner.py makes
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
    for query, ms in (("?timeout=7", 7000), ("", tracking.BUSY_TIMEOUT_S * 1000)):
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
    tracker = Tracker(cfg, Study(cfg, splits, ds), jobs)
    row = {
        "checkpoint": str(tmp_path / "none.pt"),
        "seconds": 1.0,
        "fingerprint": "f",
        "test_acc": 0.5,
        "train_acc": 0.6,
    }
    history = [{"epoch": 1, "train_loss": 1.0}]
    monkeypatch.setattr(tracking, "RETRY_FOR_S", 0.0)
    with locked(db, 3):
        start = time.monotonic()
        with pytest.raises(MlflowException, match="locked"):  # no retries: fails at 1 s, not 20
            tracker.log_network(jobs[0], row, history)
        assert time.monotonic() - start < 2.5
    monkeypatch.setattr(tracking, "RETRY_FOR_S", 30.0)
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
        "from transferability.tracking import ensure_store\n"
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
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        for _ in range(workers)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    exp = MlflowClient(env_uri).get_experiment_by_name("x")
    assert len(MlflowClient(env_uri).search_runs([exp.experiment_id], max_results=100)) == 45
