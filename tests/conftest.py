"""Fixtures: a tiny study's settings and data, and an MLflow store of each test's own. Helpers
that tests call directly live in factories.py."""

from __future__ import annotations

import os

import pytest

from transferability import config
from transferability.splits import make_splits

from .factories import learnable_dataset


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n auto`), each worker process and what it starts
    gets its share of the cores: two workers of two threads each on two cores thrash."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def tiny_cfg(tmp_path):
    """A study small enough for a test: cifar5 at width 0.25, one epoch, two cuts."""
    return config.validate(
        {
            "data": {"val_per_class": 8},
            "model": {"arch": "cifar5", "width": 0.25},
            "train": {"epochs": 1, "batch_size": 32, "progress": False, "threads": 1},
            "study": {
                "workers": 1,  # in this process: tests patch what it runs
                "cuts": [1, 3],
                "models_dir": str(tmp_path / "models"),
                "results_dir": str(tmp_path / "results"),
            },
            "split": {"dir": str(tmp_path / "splits")},
        }
    )


@pytest.fixture
def tiny_study(tiny_cfg):
    ds = learnable_dataset()
    return tiny_cfg, make_splits(ds.classes, [0], False), ds


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch):
    """Every test logs to its own MLflow store, never to the repository's mlflow.db."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
