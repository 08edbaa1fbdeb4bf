"""A study that spans several sittings never loses, mixes or fakes a result."""

import shutil

import pytest
import torch

import transferability.train as train_mod
from transferability import config
from transferability.models import load_checkpoint
from transferability.runner import locked, prune, read_runs, run_study, write_runs

QUIET = {"log": lambda *_: None}


def with_(cfg, section, **kw):
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=kw)})


def no_mlflow(cfg):
    return with_(cfg, "study", mlflow=False)


def base_ckpt(cfg, task):
    from pathlib import Path

    return Path(cfg.study.models_dir, "bases", "random0", "s0", f"base{task}.pt")


def test_stale_bases_are_never_copied(tiny_study, tmp_path):
    """Bases trained at 1 epoch, transfers asked for at 2: refused, not silently copied."""
    cfg, splits, ds = tiny_study
    cfg = with_(no_mlflow(cfg), "study", cuts=[1], treatments=["AnB"])
    run_study(cfg, splits, ds, tmp_path / "bases.csv", which="bases", **QUIET)
    two = with_(cfg, "train", epochs=2)
    with pytest.raises(RuntimeError, match="stale or swapped") as err:
        run_study(two, splits, ds, tmp_path / "transfers.csv", which="transfers", **QUIET)
    assert "train-bases" in str(err.value)
    assert read_runs(tmp_path / "transfers.csv") == []
    msgs = []
    run_study(two, splits, ds, tmp_path / "bases.csv", which="bases", log=msgs.append)
    assert "0 done, 2 to train" in msgs[0]  # the stale bases are retrained
    rows = run_study(two, splits, ds, tmp_path / "transfers.csv", which="transfers", **QUIET)
    assert len(rows) == 2 and all(r["epochs"] == "2" for r in rows)


def test_a_swapped_or_damaged_base_is_retrained_not_used(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = with_(no_mlflow(cfg), "study", cuts=[1], treatments=["BnB"])
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, which="bases", **QUIET)
    good = read_runs(runs)
    shutil.copy(base_ckpt(cfg, "A"), base_ckpt(cfg, "B"))  # baseA.pt over baseB.pt
    with pytest.raises(RuntimeError, match=r"holds random0/s0/baseA"):
        run_study(cfg, splits, ds, tmp_path / "t.csv", which="transfers", **QUIET)
    base_ckpt(cfg, "A").write_bytes(b"\x00garbage" * 100)  # damaged
    msgs = []
    run_study(cfg, splits, ds, runs, which="bases", log=msgs.append)
    assert "0 done, 2 to train" in msgs[0]
    keys = ("network", "test_acc", "train_loss", "checkpoint_md5")
    same = [[r[k] for k in keys] for r in read_runs(runs)] == [[r[k] for k in keys] for r in good]
    assert same  # retrained: the same networks, bit for bit on this CPU
    base_ckpt(cfg, "A").write_bytes(b"junk")
    with pytest.raises(ValueError) as err:
        load_checkpoint(base_ckpt(cfg, "A"))
    assert "weights_only" not in str(err.value) and "baseA.pt" in str(err.value)


def test_results_are_additive_and_pruning_is_explicit(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = with_(no_mlflow(cfg), "study", treatments=["AnB"])
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, **QUIET)  # cuts 1 and 3: 2 bases + 4 transfers
    assert len(read_runs(runs)) == 6
    narrower = with_(cfg, "study", cuts=[1])
    msgs = []
    run_study(narrower, splits, ds, runs, log=msgs.append)
    assert "0 to train" in msgs[0] and len(read_runs(runs)) == 6  # nothing deleted
    seed1 = with_(narrower, "study", seeds=[1])
    run_study(seed1, splits, ds, runs, **QUIET)
    seeds = {r["seed"] for r in read_runs(runs)}
    assert seeds == {"0", "1"} and len(read_runs(runs)) == 10  # both studies' rows kept
    msgs = []
    assert len(prune(narrower, splits, ds, runs, log=msgs.append)) == 6  # a dry run
    assert len(read_runs(runs)) == 10 and "would drop 6 row(s)" in msgs[0] and "--yes" in msgs[0]
    dropped = prune(narrower, splits, ds, runs, yes=True, **QUIET)
    assert len(dropped) == 6 and {r["seed"] for r in read_runs(runs)} == {"0"}
    assert len(read_runs(runs)) == 4


def test_a_second_writer_is_refused_with_a_clear_message(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    runs = tmp_path / "runs.csv"
    with locked(runs), pytest.raises(RuntimeError, match="another study is writing"):
        run_study(no_mlflow(cfg), splits, ds, runs, **QUIET)


def test_a_foreign_table_is_named_not_a_keyerror(tmp_path):
    (tmp_path / "runs.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"runs\.csv is not a results table"):
        read_runs(tmp_path / "runs.csv")


def test_divergence_stops_the_network_naming_the_setting_and_writes_no_row(
    tiny_study, tmp_path, monkeypatch
):
    cfg, splits, ds = tiny_study
    real = train_mod.train_step

    def exploding(*args, **kwargs):
        out, loss = real(*args, **kwargs)
        return out, loss * torch.tensor(float("nan"))

    monkeypatch.setattr(train_mod, "train_step", exploding)
    runs = tmp_path / "runs.csv"
    with pytest.raises(RuntimeError, match=r"TrainingDiverged.*train\.lr") as err:
        run_study(
            with_(no_mlflow(cfg), "study", retries=3), splits, ds, runs, which="bases", **QUIET
        )
    assert str(err.value).count("\n  random0/s0/baseA:") == 1  # reported once: not retried
    assert read_runs(runs) == []


def test_bad_settings_are_refused_naming_the_key_and_where_it_came_from():
    bad_settings = {
        "train.lr=.inf": "train.lr",
        "train.lr=50": "train.lr",
        "study.cuts=[1,1]": "study.cuts",
        "train.weight_decay=.nan": "train.weight_decay",
    }
    for bad, key in bad_settings.items():
        with pytest.raises(config.ConfigError, match=rf"--set: {key}"):
            config.load(None, [bad])


def test_trust_rows_keeps_finished_rows_whose_checkpoints_are_elsewhere(tiny_study, tmp_path):
    """Resuming on a fresh machine: finished rows stand; a missing base needed by unfinished
    networks is retrained and they copy the new one (its md5 is in their rows)."""
    cfg, splits, ds = tiny_study
    cfg = with_(no_mlflow(cfg), "study", cuts=[1], treatments=["AnB", "BnB"])
    runs = tmp_path / "runs.csv"
    run_study(with_(cfg, "study", treatments=["AnB"]), splits, ds, runs, **QUIET)
    before = {r["network"]: r for r in read_runs(runs)}
    shutil.rmtree(cfg.study.models_dir)  # the new machine has no checkpoints
    msgs = []
    run_study(cfg, splits, ds, runs, trust_rows=True, log=msgs.append)
    assert "2 done, 4 to train" in msgs[0]  # 2 AnB done; 2 BnB + the 2 bases they copy
    after = {r["network"]: r for r in read_runs(runs)}
    assert all(after[k] == v for k, v in before.items() if "A1" in k and "base" not in k)
    bnb = after["random0/s0/B1B"]
    assert bnb["source_md5"] == after["random0/s0/baseB"]["checkpoint_md5"]
    write_runs(runs, list(after.values()))  # a rewrite keeps every column
    assert read_runs(runs) == list(after.values())


def test_reproduce_retrains_a_sample_and_compares_with_the_committed_rows(tiny_study, tmp_path):
    from transferability.networks import plan
    from transferability.runner import default_sample, reproduce

    cfg, splits, ds = tiny_study
    cfg = no_mlflow(cfg)
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, **QUIET)
    assert default_sample(plan(cfg, splits)) == ["random0/s0/baseB", "random0/s0/B3B"]
    sample = ["random0/s0/baseB", "random0/s0/B1B+", "random0/s0/B3B"]
    out = reproduce(cfg, splits, ds, runs, sample, tmp_path / "re", tolerance=1.0, **QUIET)
    assert [r["verdict"] for r in out] == ["ok (identical)"] * 3
    rows = read_runs(runs)
    for r in rows:  # a committed row that the rerun does not give
        if r["network"] == "random0/s0/B3B":
            r["test_acc"] = str(float(r["test_acc"]) - 0.05)
        if r["network"] == "random0/s0/B1B+":
            r["machine"] = "another CPU"
    write_runs(runs, rows)
    out = reproduce(cfg, splits, ds, runs, sample, tmp_path / "re2", tolerance=1.0, **QUIET)
    verdicts = {r["network"]: r["verdict"] for r in out}
    assert verdicts["random0/s0/B3B"] == "FAIL"
    assert verdicts["random0/s0/B1B+"] == "ok (within tolerance)"
    with pytest.raises(ValueError, match="sample it too"):
        reproduce(cfg, splits, ds, runs, ["random0/s0/B3B"], tmp_path / "re3", 1.0, **QUIET)


def test_a_pilot_run_stopped_in_its_selffer_keeps_its_finished_base(
    tiny_study, tmp_path, monkeypatch
):
    from transferability.pilot import run_pilot

    from .factories import stop_at_step

    cfg, splits, ds = tiny_study
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_every_s": 0})})
    args = (cfg, ds, splits[0], [(8, 2)], ["A"], [0])
    unbroken = run_pilot(*args, tmp_path / "a.csv", **QUIET)
    steps = 2  # an epoch: 40 images in batches of 32
    stop_at_step(monkeypatch, 2 * steps + steps + 1)  # the base done, in the selffer's 2nd epoch
    with pytest.raises(KeyboardInterrupt):
        run_pilot(*args, tmp_path / "b.csv", **QUIET)
    kept = tmp_path / ".partial/b/8x2-A-s0"
    assert (kept / "base.json").is_file()
    stop_at_step(monkeypatch, 0)
    resumed = run_pilot(*args, tmp_path / "b.csv", **QUIET)
    assert train_mod.train_step.calls["n"] == steps  # the selffer's last epoch alone
    same = ["val_acc", "selffer_val_acc", "test_acc"]
    assert resumed[same].to_dict("records") == unbroken[same].to_dict("records")
    assert not kept.exists()  # the row written, what it resumed from is gone


def test_the_pilot_trains_each_budget_once_and_scores_it_on_validation(tiny_study, tmp_path):
    from transferability.pilot import run_pilot

    cfg, splits, ds = tiny_study
    out = tmp_path / "pilot.csv"
    rows = run_pilot(cfg, ds, splits[0], [(8, 1), (8, 2)], ["A"], [0], out, **QUIET)
    assert list(rows.epochs) == [1, 2] and (rows.per_class == 8).all()
    assert rows.val_acc.between(0, 1).all() and rows.image_epochs.tolist() == [40, 80]
    msgs = []
    again = run_pilot(cfg, ds, splits[0], [(8, 1), (8, 2)], ["A"], [0], out, log=msgs.append)
    assert not msgs and again.val_acc.tolist() == rows.val_acc.tolist()  # nothing retrained


def test_a_checkpoint_reading_stage_keeps_finished_blocks_and_computes_only_what_changed(tmp_path):
    import pandas as pd

    from transferability.runner import blockwise

    out, calls, msgs = tmp_path / "table.csv", [], []
    r0, r1 = ("random0", 0), ("random1", 0)

    def compute(todo):
        calls.append([f"{s}/s{k}" for s, k in todo])
        for split, seed in todo:
            yield (split, seed), pd.DataFrame({"split": [split], "seed": [seed], "v": [0.25]})

    def run(keys, only=None, fn=compute):
        stamp = {"machine": "here", "precision": "fp32"}
        return blockwise(out, keys, fn, ["split", "seed", "v"], stamp, only, msgs.append)

    first = run({r0: "a", r1: "b"})
    assert calls == [["random0/s0", "random1/s0"]] and len(first) == 2
    assert list(first.columns) == ["split", "seed", "v", "machine", "precision", "block_key"]
    table = out.read_bytes()
    run({r0: "a", r1: "b"})  # nothing changed (its checkpoints need not be there): all kept
    assert calls[-1] == [] and out.read_bytes() == table
    assert any(m.startswith("random0/s0: done before, kept") for m in msgs)
    run({r0: "a", r1: "b2"})  # a network of random1 retrained (another md5): that block only
    assert calls[-1] == ["random1/s0"]
    run({r0: "a2", r1: "b3"}, only=["random1/s0"])  # narrowed: random0 left out, and said
    assert calls[-1] == ["random1/s0"] and set(pd.read_csv(out).split) == {"random1"}
    assert "not computed yet (--block): random0/s0" in msgs[-1]
    run({r1: "b3"})  # a block the study no longer holds is dropped
    assert set(pd.read_csv(out).split) == {"random1"}

    def stops(todo):  # a stage stopped half-way keeps the blocks it finished
        yield next(iter(compute(todo[:1])))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run({r0: "a", r1: "b4"}, fn=stops)
    assert set(pd.read_csv(out).split) == {"random0"}  # random1's old key no longer held
    with pytest.raises(ValueError, match=r"--block: random9/s0 not among.*random0/s0"):
        run({r0: "a"}, only=["random9/s0"])
    out.write_text("split,seed,v\nrandom0,0,0.5\n")  # written before blocks were kept
    run({r0: "a"})
    assert calls[-1] == ["random0/s0"]


def test_a_block_is_computed_only_from_recorded_checkpoints_that_are_here(tiny_study, tmp_path):
    from transferability.networks import Networks, base_job
    from transferability.runner import block_key, need_checkpoints

    cfg, splits, ds = tiny_study
    nets = Networks(with_(no_mlflow(cfg), "study", models_dir=str(tmp_path / "m")), splits, ds)
    jobs = [base_job("random0", "random", 0, t) for t in ("A", "B")]
    md5s = {"random0/s0/baseA": "aa", "random0/s0/baseB": "bb"}
    key = block_key(md5s, nets, jobs, version=1)
    assert key != block_key({**md5s, "random0/s0/baseB": "cc"}, nets, jobs, version=1)
    assert key != block_key(md5s, nets, jobs, version=2)
    assert key != block_key({"random0/s0/baseA": "aa"}, nets, jobs, version=1)  # not trained yet
    with pytest.raises(
        ValueError, match=r"no results row records the checkpoint of random0/s0/baseB"
    ):
        need_checkpoints(nets, jobs, {"random0/s0/baseA": "aa"})
    with pytest.raises(FileNotFoundError, match=r"2 checkpoint\(s\) to read are not on this"):
        need_checkpoints(nets, jobs, md5s)
