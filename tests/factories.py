"""Shared test helpers: image folders and a learnable data set, hand-made results tables
(analysis, beyond-the-paper and report tests), what `make repro` would run (profile and fault
tests), and the package modules a source imports (import layering and report tests)."""

import ast
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from transferability import data
from transferability import train as train_mod
from transferability.analysis.diagnostics import COLUMNS as DIAGNOSTICS_COLUMNS

ROOT = Path(__file__).resolve().parents[1]

ARCHIVE = ROOT / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"
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


L = 5  # cifar5: cuts 1..4


def make_runs(blocks, acc, kind="random", classes=5):
    """Rows of `blocks` blocks, both directions, cuts 1..4; acc(block, target task, treatment, n)
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


def package_imports(source: str, depth: int = 1) -> set[str]:
    """Every transferability module that Python `source` imports, at the top or inside a
    function, named by its first `depth` parts below the package (depth 2: analysis.blocks,
    tracking.store)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "transferability":
                continue
            below = parts[1:]
            if len(below) < depth:  # from transferability(.analysis) import a, b
                found |= {".".join([*below, a.name]) for a in node.names}
            else:
                found.add(".".join(below[:depth]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "transferability" and len(parts) > depth:
                    found.add(".".join(parts[1 : depth + 1]))
    return found


def run(monkeypatch, capsys, *args):
    """The `transferability` command in this process: (exit code, stdout, stderr)."""
    from transferability.cli import main

    monkeypatch.setattr(sys, "argv", ["transferability", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_project(monkeypatch, tmp_path):
    """A folder of a few tiny images and a params.yaml for one random split, one epoch."""
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "imgs", n_train=4, n_test=2)
    (tmp_path / "params.yaml").write_text(
        "data: {source: imgs, val_per_class: 1}\nmodel: {width: 0.25}\n"
        "split: {random_seeds: [0], dissimilar: false}\n"
        "train: {epochs: 1, batch_size: 8, progress: false}\nstudy: {cuts: [2]}\n"
    )


def stop_at_step(monkeypatch, step: int):
    """Make training stop (as a killed process would) at its `step`-th optimizer step."""
    real, calls = train_mod.train_step, {"n": 0}

    def stopping(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    stopping.calls = calls
    monkeypatch.setattr(train_mod, "train_step", stopping)
    return real


def diag_rows(blocks=5, penalty=0.005, bump=0.001, drop1=0.3, edge=0.02):
    """A diagnostics table of `blocks` blocks: stitching penalty `penalty` (+0.001 per block),
    a bump of `bump` (× (block + 1)) in the middle of the path to the source, resetting layer
    1 costs `drop1` (+0.01 per block) and layer 4 one point, AnB+ beats the scale-matched start
    by `edge` (+0.002 per block); the B->A direction 0.002 above A->B everywhere."""
    rows = []

    def add(b, d, task, n, diagnostic, variant, value, alpha=np.nan):
        acc = 0.8 - value
        rows.append((f"random{b}", 0, d, task, n, diagnostic, variant, alpha, acc, acc, 0.8,
                     value, 0.1))  # fmt: skip

    for b in range(blocks):
        for t in ("A", "B"):
            for layer in range(1, L + 1):
                v = {1: drop1 + 0.01 * b, 4: 0.01}.get(layer, 0.03)
                add(b, "", t, layer, "reinit", "init", v)
                add(b, "", t, layer, "reinit", "fresh", v + 0.01)
        for d, s in (("A->B", 0.0), ("B->A", 0.002)):
            t = d[-1]
            for n in range(1, L):
                add(b, d, t, n, "stitching", "identity", 0.4)
                add(b, d, t, n, "stitching", "trained", penalty + 0.001 * b + s)
                add(b, d, t, n, "transfusion", "scale", edge + 0.002 * b + s)
                for a in (0.0, 0.5, 1.0):
                    mid = a == 0.5
                    add(b, d, t, n, "interpolation", "to source", bump * (b + 1) * mid, a)
                    add(b, d, t, n, "interpolation", "to BnB+", 0.2 * mid + s, a)
    return pd.DataFrame(rows, columns=DIAGNOSTICS_COLUMNS)


def pipeline_module(name: str):
    """pipelines/<name>.py imported as a module (the stage scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
