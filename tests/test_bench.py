"""The benchmark runs end to end and writes the figures it promises (values are not asserted)."""

import json
import sys

import torch

from transferability import bench, data
from transferability.cli import main

from .conftest import learnable_dataset

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
    assert figures["study_networks"] == 588  # the reference profile: 14 blocks x 42 networks


def test_paths_take_turns_and_the_best_timing_counts(monkeypatch):
    calls, times = [], iter([4.0, 1.0, 2.0, 3.0, 8.0, 0.5])
    monkeypatch.setattr(bench, "_timed", lambda fn, device: (fn(), next(times))[1])
    paths = {"a": (100, lambda: calls.append("a")), "b": (10, lambda: calls.append("b"))}
    img_s = bench.interleaved(paths, torch.device("cpu"), rounds=3)
    assert calls == ["a", "b"] * 3
    assert img_s == {"a": 100 / 2.0, "b": 10 / 0.5}
