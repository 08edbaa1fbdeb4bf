"""On a CUDA GPU: auto takes bf16, rows record it, workers share the GPU. Skipped without one
(`.ci/gpu-check` runs them: `pytest -m cuda`)."""

import pytest
import torch

from transferability import data
from transferability.networks import Networks, plan
from transferability.runner import run_study

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
QUIET = {"log": lambda *_: None}


def on_cuda(cfg, tmp_path, **study):
    study = {"mlflow": False, "models_dir": str(tmp_path / "models"), **study}
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"device": "cuda"}),
            "study": cfg.study.model_copy(update=study),
            "data": cfg.data.model_copy(update={"prepared": str(tmp_path / "dataset.npz")}),
        }
    )


def test_a_study_trains_on_cuda_in_bf16_and_says_so(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = on_cuda(cfg, tmp_path)
    msgs = []
    rows = run_study(cfg, splits, ds, tmp_path / "runs.csv", log=msgs.append)
    assert "on cuda in bf16" in msgs[0]
    assert len(rows) == 22 and {r["precision"] for r in rows} == {"bf16"}
    assert all(float(r["test_acc"]) > 0.4 for r in rows if r["treatment"] == "base")  # chance 0.2


def test_fp32_on_cuda_has_the_fingerprint_of_fp32_anywhere(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    fp32 = on_cuda(cfg, tmp_path)
    fp32 = fp32.model_copy(update={"train": fp32.train.model_copy(update={"precision": "fp32"})})
    cpu = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"device": "cpu", "precision": "fp32"})}
    )
    job = plan(cfg, splits)[0]
    assert Networks(fp32, splits, ds).fingerprint(job) == Networks(cpu, splits, ds).fingerprint(job)
    assert Networks(on_cuda(cfg, tmp_path), splits, ds).fingerprint(job) != (
        Networks(cpu, splits, ds).fingerprint(job)
    )


def test_local_workers_share_one_gpu(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    data.save(ds, tmp_path / "dataset.npz")
    cfg = on_cuda(cfg, tmp_path, workers=2, treatments=["AnB+"], cuts=[1])
    rows = run_study(cfg, splits, ds, tmp_path / "runs.csv", **QUIET)
    assert len(rows) == 4 and {r["precision"] for r in rows} == {"bf16"}
