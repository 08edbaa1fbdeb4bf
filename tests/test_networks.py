import csv
import warnings

import pytest
import torch

import transferability.networks as networks_mod
import transferability.train as train_mod
from transferability.networks import Job, Networks, base_job, plan
from transferability.runner import read_runs, run_study

from .factories import stop_at_step

QUIET = {"log": lambda *_: None}


def test_study_writes_one_row_per_network_with_every_column(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    rows = run_study(cfg, splits, ds, tmp_path / "runs.csv", **QUIET)
    table = read_runs(tmp_path / "runs.csv")
    assert [r["network"] for r in table] == [j.network for j in plan(cfg, splits)]
    assert len(rows) == len(table) == 22
    for r in table:
        assert all(r[c] != "" for c in ("network", "treatment", "test_acc", "checkpoint"))
        assert (r["n"] == "0") == (r["treatment"] == "base")
    base = [r for r in table if r["treatment"] == "base"]
    assert all(float(r["test_acc"]) > 0.5 for r in base)  # far above the 20% of chance
    r = next(r for r in table if r["network"] == "random0/s0/A3B+")
    assert (r["source_network"], r["direction"], r["n"]) == ("random0/s0/baseA", "A->B", "3")


def test_same_seed_same_numbers_on_cpu(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    sub = cfg.model_copy(update={"study": cfg.study.model_copy(update={"treatments": ["AnB"]})})
    a = run_study(sub, splits, ds, tmp_path / "a.csv", **QUIET)
    b = run_study(sub, splits, ds, tmp_path / "b.csv", **QUIET)  # b.csv empty: trains again
    assert [r["test_acc"] for r in a] == [r["test_acc"] for r in b]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_resume_after_a_crash_loses_only_the_network_in_progress(tiny_study, tmp_path, monkeypatch):
    cfg, splits, ds = tiny_study
    runs = tmp_path / "runs.csv"
    real_train = networks_mod.train
    calls = {"n": 0}

    def crashing_train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # killed mid-network
        return real_train(*args, **kwargs)

    monkeypatch.setattr(networks_mod, "train", crashing_train)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, splits, ds, runs, **QUIET)
    done = read_runs(runs)
    assert len(done) == 6  # every finished network kept, no half row
    with open(runs) as f:
        assert all(len(r) == len(networks_mod.COLUMNS) for r in csv.reader(f))
    assert not list(tmp_path.rglob(".*.tmp"))

    monkeypatch.setattr(networks_mod, "train", real_train)
    trained = []
    log = {"log": lambda msg: trained.append(msg)}
    resumed = run_study(cfg, splits, ds, runs, **log)
    assert "6 done, 16 to train" in trained[0]
    assert resumed[:6] == done  # finished rows untouched

    # a resumed study gives exactly what an uninterrupted one gives
    fresh_cfg = cfg.model_copy(
        update={"study": cfg.study.model_copy(update={"models_dir": str(tmp_path / "fresh")})}
    )
    fresh = run_study(fresh_cfg, splits, ds, tmp_path / "fresh.csv", **QUIET)
    assert [r["test_acc"] for r in resumed] == [r["test_acc"] for r in fresh]


def test_a_changed_setting_retrains_and_a_missing_checkpoint_is_retrained(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    runs = tmp_path / "runs.csv"
    bases = {"which": "bases"}
    run_study(cfg, splits, ds, runs, **bases, **QUIET)
    msgs = []
    run_study(cfg, splits, ds, runs, **bases, log=msgs.append)
    assert "2 done, 0 to train" in msgs[0]
    (tmp_path / "models" / "bases" / "random0" / "s0" / "baseA.pt").unlink()
    msgs.clear()
    run_study(cfg, splits, ds, runs, **bases, log=msgs.append)
    assert "1 done, 1 to train" in msgs[0]
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 0.03})})
    msgs.clear()
    run_study(changed, splits, ds, runs, **bases, log=msgs.append)
    assert "0 done, 2 to train" in msgs[0]


def test_transfers_without_bases_say_what_is_missing(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    with pytest.raises(FileNotFoundError, match=r"baseB\.pt: train the bases first"):
        run_study(cfg, splits, ds, tmp_path / "runs.csv", which="transfers", **QUIET)


def test_an_interrupted_checkpoint_write_leaves_no_file(tmp_path, monkeypatch):
    import torch

    from transferability.models import NetConfig, build, save_checkpoint

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "m.pt", build(NetConfig("cifar5", 2), 0), {})
    assert list(tmp_path.iterdir()) == []


def test_a_network_stopped_mid_training_goes_on_to_the_same_numbers(tiny_study, monkeypatch):
    cfg, splits, ds = tiny_study
    cfg = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"epochs": 3, "save_every_s": 0})}
    )
    base = base_job("random0", "random", 0, "A")
    frozen = Job("random0", "random", 0, "A->B", "A", "B", "AnB", 1)  # copies base, trains part
    unbroken = Networks(cfg, splits, ds)
    results = {}
    for job in (base, frozen):
        t = unbroken.train(job)
        results[job.name] = (t.model.state_dict(), t.result.history)
        unbroken.save(t)
        assert not unbroken.partial(job).exists()  # a finished run leaves no state behind

    for job in (base, frozen):
        nets = Networks(cfg, splits, ds)
        steps_per_epoch = -(-len(nets.task("random0", job.target_task).train_x) // 32)
        real = stop_at_step(monkeypatch, 2 * steps_per_epoch + 2)  # in the last epoch
        with pytest.raises(KeyboardInterrupt):
            nets.train(job)
        partial = nets.partial(job)
        saved = torch.load(partial, weights_only=True)
        assert saved["epoch"] == 2
        # kept outside the checkpoint folders, which are DVC outputs
        assert nets.checkpoint(job).parent not in partial.parents
        stop_at_step(monkeypatch, 0)  # counts the steps, stops none
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the state is taken, not discarded
            resumed = Networks(cfg, splits, ds)
            t = resumed.train(job)
        assert train_mod.train_step.calls["n"] == steps_per_epoch  # the last epoch alone
        assert partial.exists()  # until the network is saved
        resumed.save(t)
        assert not partial.exists()
        monkeypatch.setattr(train_mod, "train_step", real)
        state, history = results[job.name]
        assert all(torch.equal(v, state[k]) for k, v in t.model.state_dict().items())
        assert t.result.history == history


def test_a_saved_state_of_another_network_or_machine_is_not_resumed(tiny_study, monkeypatch):
    cfg, splits, ds = tiny_study
    cfg = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"epochs": 2, "save_every_s": 0})}
    )
    job = base_job("random0", "random", 0, "A")
    nets = Networks(cfg, splits, ds)
    steps = -(-len(nets.task("random0", "A").train_x) // 32)
    stop_at_step(monkeypatch, steps + 1)  # stopped in epoch 2, epoch 1 saved
    with pytest.raises(KeyboardInterrupt):
        nets.train(job)
    assert nets.partial(job).is_file()
    stop_at_step(monkeypatch, 0)  # counts steps, stops none
    monkeypatch.setattr(train_mod, "machine", lambda: "another machine; 4 threads")
    with pytest.warns(UserWarning, match="training from the start"):
        nets.train(job)
    assert train_mod.train_step.calls["n"] == 2 * steps  # both epochs, not the second alone
