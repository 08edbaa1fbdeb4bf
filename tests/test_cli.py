"""The command line as a user meets it: help, errors that name their input, and a real study."""

import json
import shlex

import pandas as pd
import pytest

from transferability.cli import main

from .factories import ARCHIVE, run, tiny_project


def test_help_lists_a_subcommand_per_step(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0
    for cmd in ("prepare", "split", "train-bases", "transfer", "analyze", "study"):
        assert cmd in out
    code, out, _ = run(monkeypatch, capsys, "study", "--help")
    assert code == 0 and "--set KEY=VALUE" in out


@pytest.mark.parametrize(
    "override, message",
    [("train.epocs=1", "train.epocs"), ("study.cuts=[9]", "study.cuts: [9] out of range")],
)
def test_bad_setting_is_an_error_naming_it(monkeypatch, capsys, tmp_path, override, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, "prepare", "--set", override)
    assert code == 2 and message in err


def test_missing_dataset_says_where_it_looked(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, "prepare", "--set", "data.source=nowhere.tar.gz")
    assert code == 2 and "nowhere.tar.gz" in err and "torchvision" in err
    code, _, err = run(monkeypatch, capsys, "train-bases")
    assert code == 2 and "transferability prepare" in err


def test_a_sweep_of_no_sizes_still_leaves_its_checkpoint_folder(monkeypatch, capsys, tmp_path):
    """The datasize stage's checkpoint folder and table are DVC outputs: a study without the
    sweep (pipelines/beyond) must still leave them, or `dvc repro` fails on a missing output."""
    tiny_project(monkeypatch, tmp_path)
    for step in ("prepare", "split"):
        assert run(monkeypatch, capsys, step)[0] == 0
    code, out, err = run(monkeypatch, capsys, "datasize", "--set", "beyond.datasize_per_class=[]")
    assert code == 0, err
    assert "0 networks in this study (datasize)" in out
    assert (tmp_path / "models" / "datasize").is_dir()
    table = (tmp_path / "results" / "runs_datasize.csv").read_text()
    assert table.startswith("network,") and len(table.splitlines()) == 1  # its header only


def test_steps_one_by_one_on_a_tiny_folder(monkeypatch, capsys, tmp_path):
    tiny_project(monkeypatch, tmp_path)
    for step in ("prepare", "split", "train-bases", "transfer", "analyze"):
        code, _out, err = run(monkeypatch, capsys, step)
        assert code == 0, err
    assert json.loads((tmp_path / "data/splits/random0.json").read_text())["kind"] == "random"
    runs = pd.read_csv(tmp_path / "results/runs.csv")
    assert len(runs) == 2 + 2 * 5
    assert (tmp_path / "results/gaps.csv").is_file()
    recipe = json.loads((tmp_path / "results/summary.json").read_text())["recipe"]
    assert recipe["batch_size"] == 8 and recipe["crop_fill"] == "reflect"


@pytest.mark.skipif(not ARCHIVE.is_file(), reason="needs ../shared/data/cifar10-jpeg.tar.gz")
def test_smoke_study_on_a_slice_of_the_real_archive(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _out, err = run(
        monkeypatch,
        capsys,
        "study",
        "--set",
        f"data.source={ARCHIVE}",
        "--set",
        "data.train_per_class=40",
        "--set",
        "data.test_per_class=20",
        "--set",
        "data.val_per_class=10",
        "--set",
        "split.random_seeds=[0]",
        "--set",
        "split.dissimilar=false",
        "--set",
        "train.epochs=1",
        "--set",
        "train.progress=false",
    )
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "results/runs.csv")
    expected = {"baseA", "baseB"} | {
        name
        for n in range(1, 5)
        for name in (
            f"B{n}B",
            f"B{n}B+",
            f"A{n}B",
            f"A{n}B+",
            f"R{n}B",
            f"A{n}A",
            f"A{n}A+",
            f"B{n}A",
            f"B{n}A+",
            f"R{n}A",
        )
    }
    assert set(runs.network.str.split("/").str[-1]) == expected and len(runs) == 42
    assert (runs.train_images == 200).all() and (runs.test_images == 100).all()
    assert runs.test_acc.between(0, 1).all()
    gaps = pd.read_csv(tmp_path / "results/gaps.csv")
    assert set(gaps.gap) >= {
        "co_adaptation",
        "specificity",
        "fine_tuning_benefit",
        "transfer_boost",
    }
    summary = json.loads((tmp_path / "results/summary.json").read_text())
    assert set(summary["table1"]["random"]) == {"all", "upper_half", "top", "n1", "n2", "n3", "n4"}
    assert summary["gaps"]["random"]["specificity"]["n4"]["blocks"] == 1  # one block: no CI
    assert summary["gaps"]["random"]["specificity"]["n4"]["ci_low"] is None
    claims = pd.read_csv(tmp_path / "results/claims.csv")
    assert (claims.verdict == "not testable").all()


def test_time_to_accuracy_trains_each_recipe_once_and_summarises(monkeypatch, capsys, tmp_path):
    """Two recipes into one runs file, a rerun trains nothing, --no-train only summarises."""
    from transferability.analysis import time_to_accuracy

    tiny_project(monkeypatch, tmp_path)  # the command sets the epochs of each budget itself
    for step in ("prepare", "split"):
        assert run(monkeypatch, capsys, step)[0] == 0
    tta = ["time-to-accuracy", "--per-class", "3", "--epochs", "1,2", "--seeds", "0,1"]
    code, _, err = run(monkeypatch, capsys, *tta, "--plot", "tta.png")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, *tta, "--set", "train.batch_size=4")
    assert code == 0, err
    runs = tmp_path / "results/time_to_accuracy.csv"
    rows = pd.read_csv(runs)
    assert len(rows) == 2 * 2 * 2 * 2  # recipes × budgets × tasks × seeds
    assert rows.recipe.nunique() == 2 and rows.selffer_gain.isna().all()
    assert set(rows.settings.str.split(",").str[0]) == {"batch 8", "batch 4"}
    assert (tmp_path / "tta.png").stat().st_size > 0
    _, summary = time_to_accuracy(rows)
    assert sorted(summary.settings.str.split(",").str[0]) == ["batch 4", "batch 8"]
    written = (runs.read_bytes(), runs.stat().st_mtime_ns)
    code, _, err = run(monkeypatch, capsys, *tta)  # everything is there: trains nothing
    assert code == 0, err
    assert (runs.read_bytes(), runs.stat().st_mtime_ns) == written
    code, _, err = run(monkeypatch, capsys, "time-to-accuracy", "--no-train", "--plot", "b.png")
    assert code == 0, err
    assert (runs.read_bytes(), runs.stat().st_mtime_ns) == written
    assert (tmp_path / "b.png").stat().st_size > 0
    code, _, err = run(monkeypatch, capsys, "time-to-accuracy", "--no-train", "--out", "none.csv")
    assert code == 2 and "none.csv" in err


def test_a_profile_prints_as_dvc_flags_or_as_command_line_flags(capsys):

    main(["profile", "quick"])
    dvc_flags = shlex.split(capsys.readouterr().out)  # as the shell reads them
    main(["profile", "quick", "--cli"])
    cli_flags = shlex.split(capsys.readouterr().out)
    assert dvc_flags[0] == "-S" and cli_flags[0] == "--set"
    assert dvc_flags[1::2] == cli_flags[1::2]
    assert all("=" in setting for setting in dvc_flags[1::2])  # a list with spaces stays one word
    assert "--set" not in dvc_flags and "-S" not in cli_flags
