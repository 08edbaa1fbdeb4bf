"""DVC stage `report`: papermill runs report/report.ipynb on results/, then latexmk builds the PDF.

python pipelines/report.py RESULTS_DIR

The studies of params.yaml's `report.beside` (second studies, pipelines/<name>/) are drawn beside
RESULTS_DIR's, from their committed results.

The notebook only draws and formats what the aggregate stage wrote (claims.csv, summary.json,
...). Its executed copy is kept as report/build/report.ipynb; it writes the figures, tables and
macros into report/generated/, with results.md, the README's results section.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import papermill

from transferability.io import atomic_write

REPORT = Path("report")
GENERATED = REPORT / "generated"
FIGURES = ("fig_accuracy", "fig_gaps", "fig_control", "fig_paper")
# drawn where the study has them: the pilot, the sweep, CKA, the diagnostics, the studies beside
OPTIONAL = (
    "fig_pilot",
    "fig_datasize",
    "fig_cka",
    "fig_stitching",
    "fig_diagnostics",
    "fig_beside",
    "fig_size_axis",
)
WRITTEN = (
    "numbers.tex",
    "table_table1.tex",
    "table_claims.tex",
    "table_glance.tex",
    "table_gates.tex",
    "results.md",
)


def beside_studies(params: Path = Path("params.yaml")) -> list[dict]:
    """`report.beside`'s studies as the notebook takes them: each one's name and results folder
    (from its pipelines/<name>/params.yaml); a study not derived or not aggregated is an error
    that names it."""
    from transferability import config

    studies = []
    for name in config.load(params).report.beside:  # no params.yaml: the defaults
        path = Path("pipelines") / name / "params.yaml"
        if not path.is_file():
            sys.exit(f"report.beside: {name}: {path} not found (python pipelines/derive.py {name})")
        results = Path(config.load(path).study.results_dir)
        if not (results / "claims.csv").is_file():
            sys.exit(
                f"report.beside: {name}: {results / 'claims.csv'} not found: the study has not "
                f"been aggregated (dvc repro pipelines/{name}/dvc.yaml)"
            )
        studies.append({"name": name, "results_dir": str(results)})
    return studies


def main(results_dir: str) -> None:
    beside = beside_studies()
    (REPORT / "build").mkdir(parents=True, exist_ok=True)
    # what an earlier run wrote goes first: a table of a split kind this study lacks must not
    # linger and be typeset
    for pattern in ("fig_*.pdf", "fig_*.png", "table_*.tex", "numbers.tex", "results.md"):
        for stale in GENERATED.glob(pattern):
            stale.unlink()
    papermill.execute_notebook(
        REPORT / "report.ipynb",
        REPORT / "build" / "report.ipynb",
        parameters={
            "results_dir": results_dir,
            "out_dir": str(GENERATED),
            "reference_dir": str(REPORT / "reference"),
            "registration_path": str(REPORT / "registration.json"),
            "beside": beside,
        },
        kernel_name="python3",
        progress_bar=False,
    )
    missing = [
        name
        for name in (*(f"{f}.{e}" for f in FIGURES for e in ("pdf", "png")), *WRITTEN)
        if not (GENERATED / name).is_file() or (GENERATED / name).stat().st_size == 0
    ]
    if missing:
        sys.exit(f"report: the notebook did not write {missing} into {GENERATED}")
    if shutil.which("latexmk") is None:
        sys.exit("report: latexmk not found; install TeX (see README) to build the PDF")
    subprocess.run(
        [
            "latexmk",
            "-pdf",
            "-interaction=nonstopmode",
            "-halt-on-error",
            "-outdir=build",
            "paper.tex",
        ],
        cwd=REPORT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"report: {REPORT / 'build' / 'paper.pdf'}, {GENERATED / 'results.md'}")
    splice_readme(Path("README.md"), (GENERATED / "results.md").read_text())
    log_results(Path(results_dir), beside)


def log_results(results: Path, beside: list[dict]) -> None:
    """The study's parent run in MLflow gets the headline numbers, claims, figures and report;
    each study drawn beside it, its own numbers and the report on its own parent run. No store
    or no parent run is a note, never a failed stage."""
    from transferability.report import log_study_results

    log_study_results(results, study_artifacts(results, GENERATED))
    for study in beside:
        other = Path(study["results_dir"])
        log_study_results(other, [*results_artifacts(other), REPORT / "build" / "paper.pdf"])


def study_artifacts(results: Path, generated: Path) -> list[Path]:
    """What the study's parent run in MLflow gets: the figures (those of the sections the study
    has), its results (`results_artifacts`), the executed notebook and the PDF."""
    optional = [generated / f"{f}.{e}" for f in OPTIONAL for e in ("png", "pdf")]
    return [
        *(generated / f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")),
        *(p for p in optional if p.is_file()),
        *results_artifacts(results),
        REPORT / "build" / "report.ipynb",
        REPORT / "build" / "paper.pdf",
    ]


def results_artifacts(results: Path) -> list[Path]:
    """A study's results for its parent run: the claims, Table 1, the headline metrics and the
    summaries beyond the paper that hold rows (a header alone: the stage ran none)."""
    beyond = [results / f for f in ("datasize.csv", "cka_summary.csv", "diagnostics_summary.csv")]
    return [
        results / "claims.csv",
        results / "table1.csv",
        results / "metrics.json",
        *(p for p in beyond if p.is_file() and len(p.read_text().splitlines()) > 1),
    ]


def splice_readme(readme: Path, results: str) -> None:
    """Put results.md between the README's results markers (a test keeps the two equal)."""
    if not readme.is_file():
        return
    text = readme.read_text()
    start, end = "<!-- results:start", "<!-- results:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    marker, _, _ = rest.partition("-->")
    _, tail = rest.split(end, 1)
    # atomically: a full disk or a size limit leaves the old README, never half of it
    with atomic_write(readme) as f:
        f.write(f"{head}{start}{marker}-->\n{results.strip()}\n{end}{tail}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results")
