"""The DVC pipeline on tiny data: every stage runs; a parameter re-runs only what reads it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .factories import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")

pytestmark = pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed beside python")


def dvc(repo, *args):
    env = {**os.environ, "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [str(DVC), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "pipelines", repo / "pipelines")
    shutil.copytree(ROOT / "report" / "reference", repo / "report" / "reference")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    make_image_folder(tmp_path / "images", n_train=6, n_test=3)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"] |= {
        "source": str(tmp_path / "images"),
        "train_per_class": None,
        "val_per_class": 1,
    }
    params["model"]["width"] = 0.25
    params["train"] |= {"epochs": 1, "batch_size": 16, "progress": False}
    params["study"]["cuts"] = [1]
    params["split"] |= {"random_seeds": [0], "dissimilar": False}  # one block tests the stages
    params["beyond"] |= {"datasize_per_class": [2], "datasize_cuts": [1], "cka_images": 20}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


def test_repro_runs_every_stage_and_a_transfer_param_reruns_only_transfer(repo):
    dvc(repo, "repro", "aggregate")  # the report stage has a test of its own (it needs TeX)
    runs = pd.read_csv(repo / "results/runs.csv")
    assert len(runs) == 2 + 2 * 5
    assert len(pd.read_csv(repo / "results/runs_datasize.csv")) == 2 + 2 * 2  # beyond the paper
    assert len(pd.read_csv(repo / "results/cka.csv")) == 5 + 2 * 2 * 5
    assert (
        "n1"
        in json.loads((repo / "results/summary.json").read_text())["gaps"]["random"]["specificity"]
    )
    assert set(json.loads(dvc(repo, "status", "--json"))) <= {"report"}
    assert "gaps.random.specificity.n1" in dvc(repo, "metrics", "show")

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"]["cuts"] = [1, 2]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert set(json.loads(dvc(repo, "status", "--json"))) - {"report"} == {"transfer", "similarity"}

    out = dvc(repo, "repro", "aggregate")
    ran = {
        s
        for s in (
            "prepare",
            "split",
            "train_base",
            "transfer",
            "datasize",
            "similarity",
            "aggregate",
        )
        if f"Running stage '{s}'" in out
    }
    assert ran == {"transfer", "similarity", "aggregate"}, out
    assert len(pd.read_csv(repo / "results/runs.csv")) == 2 + 2 * 2 * 5
    assert set(json.loads(dvc(repo, "status", "--json"))) <= {"report"}
