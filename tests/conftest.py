from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferability import config, data
from transferability.splits import make_splits

ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def image_bytes(rng, size=32, mode="RGB", fmt="PNG") -> bytes:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    im = Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def make_image_folder(root: Path, classes=CLASSES, n_train=3, n_test=2, size=32, seed=0, **kw):
    """A CIFAR-style ImageFolder of random images: root/{train,test}/<class>/NNNN.png."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:04d}.png").write_bytes(image_bytes(rng, size, **kw))
    return root


def learnable_dataset(n_train=40, n_test=10, size=32, seed=0) -> data.Dataset:
    """Ten classes whose images differ in colour and a stripe: learnable in one epoch."""
    rng = np.random.default_rng(seed)

    def make(n):
        xs, ys = [], []
        for label in range(len(CLASSES)):
            base = np.zeros((n, 3, size, size))
            base[:, label % 3] = 120 + 12 * label
            base[:, :, (label * 3) % size, :] = 255
            xs.append(np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8))
            ys.append(np.full(n, label))
        return np.concatenate(xs), np.concatenate(ys).astype(np.int64)

    tx, ty = make(n_train)
    vx, vy = make(n_test)
    return data.Dataset(list(CLASSES), tx, ty, vx, vy, "synthetic", f"synthetic-{seed}")


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
