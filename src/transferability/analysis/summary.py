"""The aggregate stage: every results file the report reads, written from the runs tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from transferability.analysis import rules_v1
from transferability.analysis.beyond import CKA_COLUMNS, cka_table, datasize_table, datasize_units
from transferability.analysis.blocks import (
    BLOCK,
    UNIT,
    accuracy_table,
    complete_blocks,
    failed_networks,
    gap_table,
    read,
    table1,
    unit_table,
    wide_accuracy,
    without_networks,
)
from transferability.analysis.budget import budget_regime
from transferability.analysis.claims import REGISTERED, Context, blocking, evaluate
from transferability.analysis.diagnostics import COLUMNS as DIAGNOSTICS_COLUMNS
from transferability.analysis.diagnostics import diagnostics_table, stitching_pairs
from transferability.analysis.diagnostics import read as read_diagnostics
from transferability.analysis.facts import report_facts
from transferability.analysis.paper import paper_sizes
from transferability.config import AnalysisConfig
from transferability.io import atomic_write, write_json


def _clean(v):
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else round(float(v), 6)
    return v.item() if isinstance(v, np.generic) else v


def _nest(df: pd.DataFrame, keys: list[str]) -> dict:
    """Rows → nested dicts keyed by `keys` (n as "n1", ...): what `dvc metrics show` reads."""
    out: dict = {}
    for r in df.to_dict("records"):
        d = out
        for k in keys[:-1]:
            d = d.setdefault(_key(k, r[k]), {})
        d[_key(keys[-1], r[keys[-1]])] = {
            k: _clean(v) for k, v in r.items() if k not in keys and k not in ("n_from", "n_to")
        }
    return out


def _key(name: str, value) -> str:
    return f"n{value}" if name == "n" else str(value)


def analyse(
    runs_path: Path,
    out_dir: Path,
    num_layers: int,
    rules: AnalysisConfig,
    pilot_path: Path | None = None,
    planned: int | None = None,
    directions: list[str] | None = None,
    sweep_path: Path | None = None,
    cka_path: Path | None = None,
    recipe: dict | None = None,
    split_classes: dict[str, dict[str, list[str]]] | None = None,
    reference_dir: Path | None = None,
    dataset: dict | None = None,
    diagnostics_path: Path | None = None,
) -> dict:
    """Write accuracy.csv, accuracy_by_n.csv, gaps.csv, table1.csv, claims.csv (rules v2),
    claims_v1.csv (rules v1, as the reference study was registered), gates.csv, failed.csv,
    datasize.csv, cka_summary.csv, diagnostics_summary.csv, summary.json and metrics.json;
    return the summary.

    With the pilot's budgets table, the study's budget is checked against the pilot's verdict
    (a gate); with the target-size sweep's rows (`sweep_path`) and the layer similarities
    (`cka_path`), the work beyond the paper is summarised too (else its tables are empty); with
    the diagnostics' table (`diagnostics_path`), so are the diagnostics, and their claims join
    claims.csv (without it, claims.csv is what it was before they existed).
    `split_classes` (split name → {"A": [...], "B": [...]}) places each split on the
    dissimilarity axis; `reference_dir` holds the paper's numbers; `recipe` (the training
    settings) and `dataset` (its name and classes, from the results folder's dataset.json)
    are passed on to the report."""
    runs = read(runs_path)
    units, partial = complete_blocks(unit_table(runs), directions)
    if units.empty:
        raise ValueError(
            f"no block in {runs_path} has every direction yet, nothing to analyse "
            f"(blocks in progress: {', '.join(partial)})"
        )
    acc, gaps = accuracy_table(units, rules), gap_table(units, rules)
    t1 = table1(units, num_layers, rules)
    du = None
    if sweep_path and Path(sweep_path).is_file():
        sweep = read(sweep_path)
        cuts = sorted(set(sweep.n) - {0})
        du = datasize_units(runs, sweep, cuts, directions) if len(sweep) else None
    ds = datasize_table(du if du is not None else pd.DataFrame(columns=["per_class"]), rules)
    pilot = pd.read_csv(pilot_path) if pilot_path and Path(pilot_path).is_file() else None
    budget = budget_regime(runs, pilot)
    failed = failed_networks(runs, rules.failed_margin)
    has_diag = diagnostics_path and Path(diagnostics_path).is_file()
    diag = read_diagnostics(diagnostics_path) if has_diag else None
    if diag is not None and diag.empty:  # a study that runs none (beyond.diagnostics: [])
        diag = None  # has no diagnostics claims, as without the table
    context = claims_context(units, num_layers, rules, split_classes, du, diag)
    masked = context
    if len(failed):
        masked = claims_context(
            without_networks(units, runs, failed.network),
            num_layers,
            rules,
            split_classes,
            du,
            diag,
        )
    paper = paper_sizes(reference_dir) if reference_dir else None
    cl, gate_table = evaluate(context, budget["converged"], paper, masked)
    cl_v1 = rules_v1.claims(units, num_layers, rules)
    cl_v1 = pd.concat([cl_v1, pd.DataFrame([rules_v1.datasize_claim(du, rules)])])
    cka = pd.read_csv(cka_path) if cka_path and Path(cka_path).is_file() else None
    ck = cka_table(cka if cka is not None else pd.DataFrame(columns=CKA_COLUMNS), rules, directions)
    out_dir = Path(out_dir)
    tables = {
        "accuracy.csv": acc,
        "accuracy_by_n.csv": wide_accuracy(acc),
        "gaps.csv": gaps,
        "table1.csv": t1,
        "claims.csv": cl,
        "claims_v1.csv": cl_v1,
        "gates.csv": gate_table,
        "failed.csv": failed,
        "datasize.csv": ds,
        "cka_summary.csv": ck,
        "diagnostics_summary.csv": diagnostics_table(
            diag if diag is not None else pd.DataFrame(columns=DIAGNOSTICS_COLUMNS),
            rules,
            directions,
        ),
    }
    if diag is not None:  # the stitching figure's pairs: both sides over the same units
        pairs = stitching_pairs(context.random, diag, rules)
        tables["diagnostics_summary.csv"] = pd.concat(
            [tables["diagnostics_summary.csv"], pairs], ignore_index=True
        )
    dg = tables["diagnostics_summary.csv"]
    for name, df in tables.items():
        with atomic_write(out_dir / name) as f:
            df.to_csv(f, index=False, float_format="%.6f")
    bases = runs[runs.treatment == "base"]
    blocks = units.drop_duplicates(BLOCK)
    in_progress = bool(planned) and len(runs) < planned
    random_blocks = int((blocks.split_kind == "random").sum())
    summary = {
        "dataset": dataset,
        # a study still running is published as it goes; a finished one with fewer random
        # blocks than any verdict needs is a demo
        "in_progress": in_progress,
        "demo": not in_progress and random_blocks < rules.min_blocks,
        # every gate passed (a study without a convergence pilot leaves that one unchecked)
        "gates_passed": not blocking(gate_table),
        "networks": len(runs),
        "planned_networks": planned,  # the configured study's size: fewer rows = still running
        "units": len(units.drop_duplicates(UNIT)),
        "blocks": {k: int(v) for k, v in blocks.split_kind.value_counts().items()},
        "blocks_in_progress": partial,  # left out: a block counts with every direction only
        "rules": rules.model_dump(),
        "rules_registered": REGISTERED,
        "recipe": recipe or {},
        "budget": budget,
        "base_test_acc_mean": _clean(bases.test_acc.mean()),
        "base_test_acc": {r.network: _clean(r.test_acc) for r in bases.itertuples()},
        "accuracy": _nest(acc, ["split_kind", "treatment", "n"]),
        "gaps": _nest(gaps, ["split_kind", "gap", "n"]),
        "table1": _nest(t1, ["split_kind", "cuts"]),
        "claims": _records(cl, "claim"),
        "claims_v1": _records(cl_v1, "claim"),
        "gates": _records(gate_table, "gate"),
        "failed_to_learn": failed.network.tolist(),
        "facts": report_facts(
            runs,
            gaps,
            {k: int(v) for k, v in blocks.split_kind.value_counts().items()},
            num_layers,
            pilot,
            _pilot_runs(pilot_path, pilot),
            ds,
            ck,
            dg,
        ),
        "datasize": _nest(ds, ["boost", "per_class", "cuts"]),
        "cka": _nest(ck.assign(n=ck.n.astype(int)), ["comparison", "n", "layer"])
        if len(ck)
        else {},
    }
    write_json(out_dir / "summary.json", summary)
    write_json(out_dir / "metrics.json", headline(summary))
    return summary


def _pilot_runs(pilot_path: Path | None, pilot: pd.DataFrame | None) -> pd.DataFrame | None:
    """The pilot's single runs (pilot.csv beside its budgets table) of the budgets in it (a
    pilot still running may have begun another)."""
    path = Path(pilot_path).with_name("pilot.csv") if pilot_path else None
    if pilot is None or path is None or not path.is_file():
        return None
    return pd.read_csv(path).merge(pilot[["per_class", "epochs"]], on=["per_class", "epochs"])


def _records(df: pd.DataFrame, key: str) -> dict:
    return {r[key]: {k: _clean(v) for k, v in r.items() if k != key} for r in df.to_dict("records")}


def claims_context(
    units, num_layers, rules, split_classes=None, datasize=None, diagnostics=None
) -> Context:
    """The claims' inputs: complete blocks of each split kind, and each split's imbalance."""
    imbalance, dis_imbalance = {}, None
    classes = split_classes or {}
    group = classes.get("dissimilar", {}).get("A")
    if group:
        imbalance = {name: group_imbalance(v, group) for name, v in classes.items()}
        dis_imbalance = imbalance.pop("dissimilar")
    return Context(
        units[units.split_kind == "random"],
        units[units.split_kind == "dissimilar"],
        num_layers,
        rules,
        imbalance,
        dis_imbalance,
        datasize,
        diagnostics,
    )


def group_imbalance(split: dict[str, list[str]], group: list[str]) -> float:
    """How far a split separates a group of classes from the rest: |g_A/n_A − g_B/n_B|, g the
    group's classes in a task and n its classes; 0 when each task holds the same share of the
    group, 1 when one task holds the group and the other none of it (the same whichever side of
    the dissimilar split is called the group)."""
    g = set(group)
    share = [len(g & set(split[t])) / len(split[t]) for t in ("A", "B")]
    return float(abs(share[0] - share[1]))


def headline(summary: dict) -> dict:
    """The few numbers `dvc metrics show` prints: base accuracy, gaps per cut, Table 1, claims."""
    return {
        "networks": summary["networks"],
        "blocks": summary["blocks"],
        "base_test_acc_mean": summary["base_test_acc_mean"],
        "gaps": {
            kind: {gap: {n: v["estimate"] for n, v in by_n.items()} for gap, by_n in gaps.items()}
            for kind, gaps in summary["gaps"].items()
        },
        "table1": {
            kind: {
                cuts: {
                    "over_baseB": v.get("over_baseB_estimate"),
                    "over_BnB_plus": v.get("over_BnB_plus_estimate"),
                }
                for cuts, v in rows.items()
            }
            for kind, rows in summary["table1"].items()
        },
        "claims": {k: v["verdict"] for k, v in summary["claims"].items()},
    }
