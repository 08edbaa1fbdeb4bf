"""DVC stage `report`: papermill runs report/report.ipynb on results/, then latexmk builds the PDF.

python pipelines/report.py RESULTS_DIR
"""

import shutil
import subprocess
import sys
from pathlib import Path

import papermill

REPORT = Path("report")
GENERATED = REPORT / "generated"
FIGURES = ("fig_accuracy", "fig_gaps", "fig_control", "fig_paper")


def main(results_dir: str) -> None:
    (REPORT / "build").mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        REPORT / "report.ipynb",
        REPORT / "build" / "report.ipynb",
        parameters={
            "results_dir": results_dir,
            "out_dir": str(GENERATED),
            "reference_dir": str(REPORT / "reference"),
        },
        kernel_name="python3",
        progress_bar=False,
    )
    missing = [
        f"{f}.{e}"
        for f in FIGURES
        for e in ("pdf", "png")
        if not (GENERATED / f"{f}.{e}").is_file()
    ]
    if missing:
        sys.exit(f"report: figures missing from {GENERATED}: {missing}")
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
    print(f"report: {REPORT / 'build' / 'paper.pdf'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results")
