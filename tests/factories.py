"""Shared test helpers: hand-made results tables (analysis, beyond-the-paper and report tests)
and what `make repro` would run (profile and fault tests)."""

import subprocess
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

L = 5  # cifar5: cuts 1..4


def make_runs(blocks, acc, kind="random", classes=5):
    """Rows of `blocks` blocks, both directions, cuts 1..4; acc(block, direction, treatment, n)
    gives each test accuracy (treatment "base" with n=0 for the bases)."""
    rows = []
    for b in range(blocks):
        split = f"{kind}{b}"
        for t in ("A", "B"):
            rows.append(row(split, kind, "", "", t, "base", 0, acc(b, t, "base", 0), classes))
        for d in ("A->B", "B->A"):
            s, t = d.split("->")
            for n in range(1, L):
                for tr in ("BnB", "BnB+", "AnB", "AnB+", "RnB"):
                    rows.append(row(split, kind, d, s, t, tr, n, acc(b, t, tr, n), classes))
    return pd.DataFrame(rows)


def row(split, kind, d, s, t, tr, n, acc, classes):
    return {
        "network": f"{split}/s0/{tr}{n}{t}{d}",
        "split": split,
        "split_kind": kind,
        "seed": 0,
        "direction": d,
        "source_task": s,
        "target_task": t,
        "treatment": tr,
        "n": n,
        "test_acc": acc,
        "train_acc": acc,
        "num_classes": classes,
    }


def sweep_rows(blocks, boost, sizes=(25, 100), study_size=250):
    """The study's rows (`make_runs`) and the sweep's: AnB+ − BnB+ = boost(block, size)."""

    def acc(b, t, tr, n, size=study_size):
        return {"base": 0.6, "BnB+": 0.6, "AnB+": 0.6 + boost(b, size)}.get(tr, 0.6)

    study = make_runs(blocks, acc)
    study["train_images"] = study_size * 5
    rows = []
    for b in range(blocks):
        split = f"random{b}"
        for size in sizes:
            for t in ("A", "B"):
                rows.append(row(split, "random", "", "", t, "base", 0, 0.5, 5))
            for d in ("A->B", "B->A"):
                s, t = d.split("->")
                for n in (1, 3):
                    for tr in ("BnB+", "AnB+"):
                        a = acc(b, t, tr, n, size) - 0.1
                        rows.append(row(split, "random", d, s, t, tr, n, a, 5))
            for r in rows[-10:]:
                r["network"] = f"size{size}/{r['network']}"
                r["train_images"] = size * 5
    return study, pd.DataFrame(rows)


def make_repro_dry(*args: str) -> str:
    """The line that `make -n repro ARGS` would run dvc with."""
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "repro", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return next(ln for ln in reversed(out.stdout.splitlines()) if "bin/dvc " in ln)


def shell_words(cmd: str) -> list[str]:
    """The words bash splits `cmd` into (its quoting applied): what a program is handed."""
    return subprocess.run(
        ["bash", "-c", f'w() {{ printf "%s\\n" "$@"; }}; w {cmd}'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
