"""The aggregate stage (`transferability analyze`): the study's results tables merged into
<results_dir>/runs.csv and analysed (`analysis.analyse`) with what the settings and the split
files say about the study, and the console summary of what it wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferability.analysis import analyse
from transferability.config import Config, recipe
from transferability.networks import plan
from transferability.place import recorded_dataset
from transferability.runner import merge_runs, read_runs
from transferability.splits import Split, named_splits, split_path

REFERENCE = Path("report/reference")  # the original paper's numbers


def aggregate(
    cfg: Config,
    runs: list[Path] = (),
    sweep: Path | None = None,
    cka: Path | None = None,
    diagnostics: Path | None = None,
) -> dict:
    """Merge `runs` into <results_dir>/runs.csv (only ever added to, under its lock), check it
    line by line, and write every results file from it; returns the summary.

    `sweep` (the target-size sweep's table), `cka` (the layer similarities) and `diagnostics`
    default to runs_datasize.csv, cka.csv and diagnostics.csv beside it, each read if there."""
    out = Path(cfg.study.results_dir)
    merged = out / "runs.csv"
    if runs and list(map(Path, runs)) != [merged]:
        merge_runs(list(map(Path, runs)), merged)
    read_runs(merged)  # a duplicate or edited line is named here, before the analysis
    return analyse(
        merged,
        out,
        cfg.num_layers,
        cfg.analysis,
        pilot_path=out / "pilot_budgets.csv",
        planned=len(plan(cfg, named_splits(cfg))),
        directions=cfg.study.directions,
        sweep_path=Path(sweep) if sweep else out / "runs_datasize.csv",
        cka_path=Path(cka) if cka else out / "cka.csv",
        diagnostics_path=Path(diagnostics) if diagnostics else out / "diagnostics.csv",
        recipe=recipe(cfg),
        split_classes=split_classes(cfg),
        reference_dir=REFERENCE if REFERENCE.is_dir() else None,
        # the dataset its dataset.json names, and the dissimilar split's groups
        dataset=(recorded_dataset(out) or {})
        | {"dissimilar_groups": list(cfg.split.dissimilar_groups)},
    )


def split_classes(cfg: Config) -> dict[str, dict[str, list[str]]]:
    """The class lists of the configured splits whose files exist (data/splits)."""
    paths = [split_path(cfg, s.name) for s in named_splits(cfg)]
    splits = [Split.load(p) for p in paths if p.is_file()]
    return {s.name: {"A": list(s.A), "B": list(s.B)} for s in splits}


CLAIM_COLUMNS = [
    "claim",
    "estimate",
    "ci_low",
    "ci_high",
    "blocks",
    "delta",
    "verdict",
    "verdict_holm",
]


def console_summary(summary: dict, out: Path) -> str:
    """What `analyze` prints: the blocks analysed, the accuracy of each treatment at each cut
    (per split kind) and the claims, read back from the files written into `out`."""
    blocks = ", ".join(f"{v} {k}" for k, v in summary["blocks"].items())
    lines = [f"{summary['networks']} networks, blocks: {blocks} → {out}/"]
    acc = pd.read_csv(out / "accuracy.csv")
    claims = pd.read_csv(out / "claims.csv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for kind, g in acc.groupby("split_kind"):
            lines.append(f"\n[{kind}] test accuracy (mean over {int(g['blocks'].max())} blocks)")
            lines.append(
                g.pivot(index="n", columns="treatment", values="mean").round(4).to_string()
            )
        lines.append("\nclaims (accuracy points; intervals over blocks)")
        lines.append(claims[[*CLAIM_COLUMNS, "verdict_holm"]].round(2).to_string(index=False))
    return "\n".join(lines)
