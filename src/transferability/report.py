"""The report stage's entry in MLflow: the study's headline numbers, claims, figures and report
put on the parent run(s) of its networks (`log_study_results`), once the report is built."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path

from transferability.tracking.store import ensure_store, sqlite_file, tracking_uri


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict, keys joined with '.'; text, booleans, nulls and NaN
    (a gap a study cannot estimate) are left out."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _numbers(v, key + ".")
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def _float(text: str | None) -> float | None:
    try:
        x = float(text or "")
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def study_summary(results_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and tags a study's parent run carries: every number of metrics.json (base
    accuracy, gaps per split kind/gap/cut, Table 1, ...), and per claim of claims.csv its
    estimate and interval (points) as claim.<name>.* metrics and its verdict as tag claim.<name>."""
    metrics, tags = {}, {}
    if (path := results_dir / "metrics.json").is_file():
        metrics |= _numbers(json.loads(path.read_text()))
    if (path := results_dir / "claims.csv").is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                name = row["claim"]
                for col in ("estimate", "ci_low", "ci_high", "blocks"):
                    if (x := _float(row.get(col))) is not None:
                        metrics[f"claim.{name}.{col}"] = x
                tags[f"claim.{name}"] = row.get("verdict") or "-"
    return metrics, tags


def _artifact_dir(path: Path) -> str:
    if path.name.startswith("fig_"):
        return "figures"
    return "results" if path.suffix in (".csv", ".json") else "report"


def log_study_results(
    results_dir: Path, artifacts: Iterable[Path] = (), uri: str | None = None
) -> list[str]:
    """Put a study's summary on its parent run(s): the parents of the networks in
    results_dir/runs.csv get `study_summary`'s metrics and tags, and `artifacts` (figures under
    figures/, tables under results/, the rest under report/). Returns the parent run ids.

    For the report stage, which must not fail for MLflow's sake: with no store, no parent run,
    or an error, it prints a note and returns what it logged to."""
    results_dir, uri = Path(results_dir), uri or tracking_uri()

    def note(text: str) -> list[str]:
        print(f"report: MLflow: {text}")
        return []

    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        return note(f"no store at {db}; the study's summary is not logged")
    if not (results_dir / "runs.csv").is_file():
        return note(f"no {results_dir / 'runs.csv'}; the study's summary is not logged")
    try:
        return _log_study_results(results_dir, [Path(a) for a in artifacts], uri, note)
    except Exception as e:
        return note(f"the study's summary is not logged ({type(e).__name__}: {str(e)[:300]})")


def _log_study_results(results_dir, artifacts, uri, note) -> list[str]:
    from mlflow.entities import Metric, RunTag

    with open(results_dir / "runs.csv", newline="") as f:
        # a network is its name and fingerprint: profiles reuse names (random0/s0/baseA)
        networks = {(r["network"], r.get("fingerprint", "")) for r in csv.DictReader(f)}
    client, experiment_id = ensure_store(uri)
    runs = client.search_runs([experiment_id], max_results=50000)
    parents = sorted(
        {
            r.data.tags["mlflow.parentRunId"]
            for r in runs
            if (r.data.tags.get("network"), r.data.tags.get("fingerprint", "")) in networks
            and r.data.tags.get("mlflow.parentRunId")
        }
    )
    parent_runs = {p: client.get_run(p) for p in parents}
    parents = [p for p in parents if parent_runs[p].info.lifecycle_stage == "active"]
    # two studies can hold the same networks (pipelines/beyond retrains the reference's first
    # blocks): the parents whose study writes `results_dir`, where the store says so
    folder = {p: parent_runs[p].data.params.get("study.results_dir") for p in parents}
    own = [p for p in parents if folder[p] and Path(folder[p]).resolve() == results_dir.resolve()]
    # else only parents that do not say (logged before the param was): never another study's
    parents = own or [p for p in parents if not folder[p]]
    if not parents:
        return note(f"no parent run holds the networks of {results_dir / 'runs.csv'}")
    metrics, tags = study_summary(results_dir)
    missing = [a for a in artifacts if not a.is_file()]
    now = int(time.time() * 1000)
    for parent in parents:
        ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
        ts = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(ms), len(ts)), 100):  # log_batch: 1000 metrics, 100 tags
            client.log_batch(parent, metrics=ms[i : i + 100], tags=ts[i : i + 100])
        for path in artifacts:
            if path.is_file():
                client.log_artifact(parent, str(path), _artifact_dir(path))
    logged = len(artifacts) - len(missing)
    note(
        f"{len(metrics)} metrics, {len(tags)} claim verdicts and {logged} files logged to parent "
        f"run(s) {', '.join(parents)}"
        + (f"; not found: {', '.join(map(str, missing))}" if missing else "")
    )
    return parents
