"""train.precision: auto takes bf16 only where it is native; fp32 rows stay what they were."""

import pandas as pd
import pytest
import torch

import transferability.train as train_mod
from transferability import config
from transferability.networks import COLUMNS, Networks, plan
from transferability.pilot import COLUMNS as PILOT_COLUMNS
from transferability.pilot import recipe_id, run_pilot
from transferability.runner import read_runs, reproduce, run_study, write_runs
from transferability.train import native_bf16, resolve_precision

QUIET = {"log": lambda *_: None}
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# computed by the code before train.precision existed (tiny_cfg, learnable_dataset): the fp32
# networks must keep them, as the committed rows keep theirs
PINNED = {"random0/s0/baseA": "d6d1ecaba2b8c434", "random0/s0/A3B+": "9770ea982a5c3b03"}
PINNED_RECIPE = "5da9bbe1439e"


def with_(cfg, section, **kw):
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=kw)})


def native(monkeypatch, has: bool) -> None:
    monkeypatch.setattr(train_mod, "native_bf16", lambda: has)


def test_native_bf16_is_what_torch_reports_and_no_when_it_cannot_tell(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bf16() is True  # AMX (Sapphire Rapids and later)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert native_bf16() is True  # AVX512-BF16 (Zen 4, Cooper Lake)

    def broken():
        raise RuntimeError("no capability report in this build")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken)
    assert native_bf16() is False


def test_auto_takes_bf16_on_cuda_and_native_cpus_only(monkeypatch):
    native(monkeypatch, False)
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("fp32", CUDA) == "fp32"
    with pytest.warns(UserWarning, match=r"train\.precision: bf16 .* emulated"):
        assert resolve_precision("bf16", CPU) == "bf16"  # allowed: rows made in bf16 elsewhere
    native(monkeypatch, True)
    assert resolve_precision("auto", CPU) == "bf16"
    with pytest.raises(ValueError, match=r"train\.precision: 'fp16'"):
        resolve_precision("fp16", CPU)
    with pytest.raises(config.ConfigError, match=r"--set: train\.precision"):
        config.load(None, ["train.precision=fp16"])


def test_fp32_fingerprints_are_the_ones_from_before_the_setting(tiny_study, monkeypatch):
    cfg, splits, ds = tiny_study
    native(monkeypatch, False)
    jobs = {j.network: j for j in plan(cfg, splits)}
    for precision in ("auto", "fp32"):
        fp32 = with_(cfg, "train", precision=precision)
        networks = Networks(fp32, splits, ds)
        assert networks.precision == "fp32"
        assert {n: networks.fingerprint(jobs[n]) for n in PINNED} == PINNED
        assert recipe_id(fp32) == PINNED_RECIPE
    native(monkeypatch, True)
    bf16 = Networks(cfg, splits, ds)  # auto on a CPU with native bf16
    assert bf16.precision == "bf16"
    assert all(bf16.fingerprint(jobs[n]) != f for n, f in PINNED.items())
    assert recipe_id(cfg) != PINNED_RECIPE


def test_auto_without_native_bf16_gives_the_fp32_rows_bit_for_bit(
    tiny_study, tmp_path, monkeypatch
):
    cfg, splits, ds = tiny_study
    cfg = with_(cfg, "study", mlflow=False, treatments=["AnB+"], cuts=[3])
    native(monkeypatch, False)
    rows = {}
    for precision in ("auto", "fp32"):
        run = with_(
            with_(cfg, "train", precision=precision),
            "study",
            models_dir=str(tmp_path / precision),
        )
        msgs = []
        rows[precision] = run_study(run, splits, ds, tmp_path / f"{precision}.csv", log=msgs.append)
        assert "on cpu in fp32" in msgs[0]
    same = [c for c in COLUMNS if c not in ("seconds", "checkpoint")]
    assert [{c: r[c] for c in same} for r in rows["auto"]] == [
        {c: r[c] for c in same} for r in rows["fp32"]
    ]
    assert {r["precision"] for r in rows["auto"]} == {"fp32"}
    fingerprints = {r["network"]: r["fingerprint"] for r in rows["auto"]}
    assert {n: fingerprints[n] for n in PINNED} == PINNED


def test_a_cpu_with_native_bf16_trains_and_records_bf16(tiny_study, tmp_path, monkeypatch):
    cfg, splits, ds = tiny_study
    cfg = with_(cfg, "study", mlflow=False)
    native(monkeypatch, True)
    rows = run_study(cfg, splits, ds, tmp_path / "runs.csv", which="bases", **QUIET)
    assert [r["precision"] for r in rows] == ["bf16", "bf16"]
    assert all(r["fingerprint"] != PINNED["random0/s0/baseA"] for r in rows)
    # the same settings on a CPU without it are other networks (fp32): retrained, not reused
    native(monkeypatch, False)
    msgs = []
    run_study(cfg, splits, ds, tmp_path / "runs.csv", which="bases", log=msgs.append)
    assert "0 done, 2 to train on cpu in fp32" in msgs[0]
    assert msgs[1].startswith(
        "2 of the networks to train have rows trained in bf16: here they train again in fp32 "
        "(train.precision: auto), as new networks"
    )
    assert msgs[1].endswith("train.precision: bf16 resumes them instead")


def test_tables_from_before_the_column_read_as_fp32(tmp_path):
    old = [c for c in COLUMNS if c != "precision"]
    numbers = {"test_acc": "0.5", "val_acc": "0.5", "train_acc": "0.5", "train_loss": "1.0"}
    row = dict.fromkeys(old, "x") | numbers | {"seconds": "1.0", "network": "random0/s0/baseA"}
    (tmp_path / "runs.csv").write_text(",".join(old) + "\n" + ",".join(row[c] for c in old) + "\n")
    rows = read_runs(tmp_path / "runs.csv")
    assert rows[0]["precision"] == "fp32"
    write_runs(tmp_path / "again.csv", rows)
    assert read_runs(tmp_path / "again.csv")[0]["precision"] == "fp32"


def test_an_old_pilot_table_reads_as_fp32_and_keeps_its_budgets(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    old = [c for c in PILOT_COLUMNS if c != "precision"]
    row = dict.fromkeys(old, 0) | {"split": "random0", "task": "A", "seed": 0}
    row |= {"per_class": 8, "epochs": 1, "recipe": recipe_id(cfg), "settings": "s"}
    pd.DataFrame([row], columns=old).to_csv(tmp_path / "pilot.csv", index=False)
    out = run_pilot(cfg, ds, splits[0], [(8, 1)], ["A"], [0], tmp_path / "pilot.csv", **QUIET)
    assert len(out) == 1 and out.precision.tolist() == ["fp32"]  # nothing retrained


def test_reproduce_retrains_in_the_rows_precision(tiny_study, tmp_path, monkeypatch):
    """Committed fp32 rows are reproduced in fp32 even where auto would now take bf16."""
    cfg, splits, ds = tiny_study
    cfg = with_(cfg, "study", mlflow=False, treatments=["BnB+"], cuts=[1])
    native(monkeypatch, False)
    run_study(cfg, splits, ds, tmp_path / "runs.csv", **QUIET)
    native(monkeypatch, True)
    out = reproduce(
        cfg,
        splits,
        ds,
        tmp_path / "runs.csv",
        ["random0/s0/baseB", "random0/s0/B1B+"],
        tmp_path / "work",
        4.5,
        **QUIET,
    )
    assert [r["verdict"] for r in out] == ["ok (identical)", "ok (identical)"]
