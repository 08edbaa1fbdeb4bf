"""The report stage on a tiny study: every figure, table and macro, and a PDF that compiles."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from transferability.analysis import analyse
from transferability.study import run_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="needs TeX (latexmk)")
def test_report_stage_builds_every_figure_and_the_pdf(tiny_study, tmp_path, monkeypatch):
    cfg, splits, ds = tiny_study
    work = tmp_path / "work"
    shutil.copytree(
        ROOT / "report", work / "report", ignore=shutil.ignore_patterns("build", "generated")
    )
    run_study(cfg, splits, ds, work / "results" / "runs.csv", log=lambda *_: None)
    analyse(work / "results" / "runs.csv", work / "results", num_layers=5)
    out = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "report.py"), "results"],
        cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    gen = work / "report" / "generated"
    for fig in ("fig_accuracy", "fig_gaps", "fig_control", "fig_paper"):
        assert (gen / f"{fig}.pdf").stat().st_size > 1000 and (gen / f"{fig}.png").is_file()
    for table in ("table_accuracy_random", "table_gaps_random", "table_table1", "table_claims"):
        assert "\\toprule" in (gen / f"{table}.tex").read_text()
    numbers = (gen / "numbers.tex").read_text()
    assert "\\newcommand{\\BaseAccMean}" in numbers and "\\newcommand{\\NumNetworks}{22}" in numbers
    assert (work / "report" / "build" / "paper.pdf").stat().st_size > 10000
