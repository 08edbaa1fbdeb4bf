"""The benchmark runs end to end and writes the figures it promises: rates that are the work
timed over the time it took, and the networks of the settings given, not of a pinned study."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from transferability import bench, config, data
from transferability.cli import main
from transferability.networks import plan
from transferability.splits import configured_splits

from .factories import CLASSES, learnable_dataset

KEYS = {"dataloader_img_s", "project_img_s", "compute_bound_img_s", "eval_img_s"}


def test_bench_prints_a_table_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data.save(learnable_dataset(n_train=20, n_test=5), tmp_path / "data/prepared/dataset.npz")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "transferability",
            "bench",
            "--images",
            "100",
            "--rounds",
            "2",
            "--loader-workers",
            "0",
            "--json",
            "bench.json",
            "--set",
            "model.width=0.25",
            "--set",
            "train.batch_size=16",
        ],
    )
    main()
    out = capsys.readouterr().out
    assert "compute bound" in out and "DataLoader" in out
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert set(figures) >= KEYS
    assert all(figures[k] > 0 for k in KEYS)
    cfg = config.load(None, ["model.width=0.25", "train.batch_size=16"])
    splits = configured_splits(cfg, CLASSES)
    assert figures["study_networks"] == len(plan(cfg, splits))  # the study as configured
    # the estimate is the configured study's work at the rate measured on the project's path
    _, at_that_rate = bench.estimate_study(
        cfg, learnable_dataset(n_train=20, n_test=5), splits, figures["project_img_s"]
    )
    assert figures["study_estimated_s"] == pytest.approx(at_that_rate)
    assert figures["achieved_flop_s"] == pytest.approx(
        figures["flop_per_img"] * figures["project_img_s"]
    )


def test_paths_take_turns_and_the_best_timing_counts(monkeypatch):
    calls, times = [], iter([4.0, 1.0, 2.0, 3.0, 8.0, 0.5])
    monkeypatch.setattr(bench, "_timed", lambda fn, device: (fn(), next(times))[1])
    paths = {"a": (100, lambda: calls.append("a")), "b": (10, lambda: calls.append("b"))}
    img_s = bench.interleaved(paths, torch.device("cpu"), rounds=3)
    assert calls == ["a", "b"] * 3
    assert img_s == {"a": 100 / 2.0, "b": 10 / 0.5}


def test_the_study_as_the_benchmark_trains_one_block_and_costs_each_profile(
    tmp_path, monkeypatch, capsys
):
    """`bench --study`: one block trained as a study trains (in a temporary folder: nothing is
    left in results/ or models/), its rates, and every profile's networks and work."""
    monkeypatch.chdir(tmp_path)
    data.save(learnable_dataset(n_train=20, n_test=5), tmp_path / "data/prepared/dataset.npz")
    settings = [
        "model.width=0.25",
        "train.batch_size=16",
        "train.epochs=1",
        "train.progress=false",
        "train.precision=fp32",
        "data.val_per_class=4",
        "study.cuts=[1]",
        "study.treatments=[AnB]",
        "study.workers=1",
    ]
    sets = [a for s in settings for a in ("--set", s)]
    profiles = str(Path(__file__).resolve().parents[1] / "profiles.yaml")
    args = ["bench", "--study", "--images", "64", "--rounds", "1", "--profiles", profiles]
    monkeypatch.setattr(sys, "argv", ["transferability", *args, "--json", "s.json", *sets])
    main()
    out = capsys.readouterr().out
    assert "networks per hour" in out and "compute bound (fp32" in out
    figures = json.loads((tmp_path / "s.json").read_text())
    # the first block: both bases and AnB at cut 1 in both directions; 5 classes x 16 images
    assert (figures["block"], figures["networks"]) == ("random0/s0", 4)
    assert figures["image_epochs"] == 4 * 5 * 16  # x 1 epoch
    assert figures["compute_bound_img_s"] > 0
    # the rates are the block's work over the wall time it took
    assert figures["networks_per_hour"] == pytest.approx(4 * 3600 / figures["seconds"])
    assert figures["image_epochs_s"] == pytest.approx(4 * 5 * 16 / figures["seconds"])
    # the profiles as configured (params: the defaults), not as --set shrank this run
    networks = {}
    for name in ("reference", *yaml.safe_load(Path(profiles).read_text())):
        p = config.load(None, config.profile_overrides(name, profiles))
        networks[name] = len(plan(p, configured_splits(p, CLASSES)))
    assert {k: v[0] for k, v in figures["profiles"].items()} == networks
    assert networks["reference"] > networks["quick"]  # the profiles differ: the test can tell
    assert not (tmp_path / "results").exists() and not (tmp_path / "models").exists()
