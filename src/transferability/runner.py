"""Running a whole study resumably: the results table, what counts as done, the training loop.

The results table (`runs.csv`) is additive: a run writes or replaces the rows of the networks it
trains and leaves every other row alone; `prune` is the explicit way to drop rows that no longer
belong to the configured study. One process at a time writes a table (a lock file beside it).

A network counts as done when its row carries the fingerprint the study now expects and its
checkpoint is that network (`Study.verify`: fingerprint and network name in the checkpoint, and
the md5 the row recorded). A stale, swapped or damaged checkpoint is retrained, never used.
With ``trust_rows`` (resuming a long study on another machine, where the checkpoints of finished
networks are absent) a row whose checkpoint is missing counts as done too; a missing base is
then retrained only if an unfinished network needs it, and those networks copy the new one.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from transferability import data as data_mod
from transferability.config import Config
from transferability.executors import execute
from transferability.io import atomic_write, md5_file
from transferability.splits import Split
from transferability.study import COLUMNS, CheckpointMismatch, Job, Study, plan, plan_datasize

# ---------------------------------------------------------------------- results table


def read_runs(path: Path) -> list[dict]:
    """The rows of a results table ([] when there is none); a foreign table is an error. A row
    from before the `precision` column was trained in fp32, and reads so."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"network", "fingerprint"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path} is not a results table of this project (no column "
                f"{', '.join(sorted(missing))}); move it away or name another with --runs"
            )
        return [r | {"precision": r.get("precision") or "fp32"} for r in reader]


def write_runs(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole table atomically: a crash leaves the old table or the new, never half."""
    with atomic_write(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock of results table `path`; a second writer is refused with a clear message."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock, timeout=0):
            yield
    except Timeout:
        raise RuntimeError(
            f"another study is writing {path} (lock {lock} is held): wait for it to finish, or "
            "give this one another study.results_dir / --runs"
        ) from None


def ordered(rows: dict[str, dict], jobs: list[Job]) -> list[dict]:
    """The study's rows in plan order, then any other rows of the table in name order."""
    planned = [rows[j.network] for j in jobs if j.network in rows]
    known = {j.network for j in jobs}
    return planned + [rows[k] for k in sorted(rows) if k not in known]


# ---------------------------------------------------------------------- what is done


def is_done(study: Study, job: Job, row: dict | None, trust_rows: bool = False) -> bool:
    if row is None or row.get("fingerprint") != study.fingerprint(job):
        return False
    path = study.checkpoint(job)
    if not path.is_file():
        return trust_rows
    recorded = row.get("checkpoint_md5")
    try:
        if recorded and md5_file(path) != recorded:
            return False
        study.verify(job, path)
    except CheckpointMismatch:
        return False
    return True


def todo(study: Study, jobs: list[Job], rows: dict[str, dict], trust_rows: bool) -> list[Job]:
    """The networks of `jobs` to (re)train, bases first; with trust_rows, a base whose checkpoint
    is missing is retrained only when an unfinished network copies it."""
    left = [j for j in jobs if not is_done(study, j, rows.get(j.network), trust_rows)]
    needed = {j.source for j in left if j.source is not None}
    for base in {j for j in needed if not study.checkpoint(j).is_file()} - set(left):
        left.append(base)
    return [j for j in jobs if j in left] + [j for j in left if j not in jobs]


# ---------------------------------------------------------------------- running


def select(jobs: list[Job], which: str) -> list[Job]:
    if which in ("all", "datasize"):
        return jobs
    if which not in ("bases", "transfers"):
        raise ValueError(f"which must be all, bases, transfers or datasize, not {which!r}")
    return [j for j in jobs if (j.treatment == "base") == (which == "bases")]


def run_study(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    runs_path: Path,
    which: str = "all",
    log: Callable[[str], None] = print,
    trust_rows: bool = False,
) -> list[dict]:
    """Train every network of `which` (all | bases | transfers of the study, or datasize: the
    target-size sweep, whose AnB+ copy the study's bases) not already done; returns the rows of
    `which`.

    Each finished network is committed at once (checkpoint, then the table rewritten
    atomically, then its MLflow run), so an interrupted study loses at most the networks in
    progress; a network whose MLflow log failed is logged on the next run.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    runs_path = Path(runs_path)
    with locked(runs_path):
        study = Study(cfg, splits, dataset)
        everything = (plan_datasize if which == "datasize" else plan)(cfg, splits)
        jobs = select(everything, which)
        rows = {r["network"]: r for r in read_runs(runs_path)}
        left = todo(study, jobs, rows, trust_rows)
        if which in ("transfers", "datasize"):
            _check_bases(study, jobs, left)
        log(
            f"{len(jobs)} networks in this study ({which}); {len(jobs) - len(left)} done, "
            f"{len(left)} to train on {study.device} in {study.precision} ({_where(cfg)})"
        )
        tracker = _tracker(cfg, study, everything, jobs, left, rows, log)
        failed: list[str] = []
        # the tracker ends its parent run KILLED on Ctrl-C and FAILED on an error, never RUNNING
        with tracker or nullcontext():
            try:
                _train(cfg, splits, study, left, everything, rows, runs_path, tracker, failed, log)
            except KeyboardInterrupt:
                log(f"interrupted: {len(rows)} rows kept in {runs_path}; run again to resume")
                raise
            if tracker:
                tracker.finish(status="FAILED" if failed else "FINISHED")
    if failed:
        raise RuntimeError(
            f"{len(failed)} network(s) failed (retried up to {cfg.study.retries} times where a "
            "retry can help; the others are saved; fix the cause and run again):\n  "
            + "\n  ".join(failed)
        )
    mine = {j.network for j in jobs}
    return [r for r in read_runs(runs_path) if r["network"] in mine]


def _where(cfg: Config) -> str:
    ex = cfg.study
    return (
        f"{ex.workers} local workers" if ex.executor == "local" and ex.workers > 1 else ex.executor
    )


def _check_bases(study: Study, jobs: list[Job], left: list[Job]) -> None:
    """Bases that come from an earlier run (not among `jobs`) must be there: say so before
    starting."""
    missing = sorted(
        {
            str(study.checkpoint(j.source))
            for j in left
            if j.source and j.source not in jobs and not study.checkpoint(j.source).is_file()
        }
    )
    if missing:
        raise FileNotFoundError(
            f"base checkpoint(s) missing: {', '.join(missing)}: train the bases first"
        )


def _tracker(cfg, study, everything, jobs, left, rows, log):
    """The MLflow tracker, with finished networks that have no run yet logged (reconcile)."""
    if not cfg.study.mlflow:
        return None
    from transferability.tracking import Tracker

    tracker = Tracker(cfg, study, everything, Path(cfg.data.prepared))
    for job in jobs:
        if job not in left and job.network in rows and not tracker.run_id_of(job.network):
            path = study.checkpoint(job)
            history = (
                torch.load(path, weights_only=True)["meta"]["history"] if path.is_file() else []
            )
            _log(tracker, job, rows[job.network], history, log)
    return tracker


def _log(tracker, job, row, history, log) -> None:
    """Log one network to MLflow; a failure costs the run, never the row (logged next time)."""
    try:
        tracker.log_network(job, row, history)
    except Exception as e:  # the row is already committed: say so and go on
        log(
            f"{job.network}: MLflow log failed ({type(e).__name__}: {e}); row kept, logged next run"
        )


def _train(cfg, splits, study, left, everything, rows, runs_path, tracker, failed, log) -> None:
    done = 0
    # bases before the transfers that copy them; within each phase networks are independent
    for phase in (
        [j for j in left if j.treatment == "base"],
        [j for j in left if j.treatment != "base"],
    ):
        for job, result, error in execute(cfg, splits, study, phase):
            done += 1
            if error is not None:
                failed.append(f"{job.network}: {error}")
                log(f"[{done}/{len(left)}] {job.network}: FAILED ({error})")
                continue
            row, history = result
            rows[job.network] = row
            write_runs(runs_path, ordered(rows, everything))
            if tracker:
                _log(tracker, job, row, history, log)
            log(
                f"[{done}/{len(left)}] {job.network}: val {row['val_acc']:.4f} "
                f"test {row['test_acc']:.4f} ({row['seconds']:.0f}s)"
            )
            sys.stdout.flush()


def prune(
    cfg: Config, splits: list[Split], dataset: data_mod.Dataset, runs_path: Path, log=print
) -> list[str]:
    """Drop the rows (and MLflow runs) of networks the configured study no longer holds."""
    runs_path = Path(runs_path)
    with locked(runs_path):
        everything = plan(cfg, splits)
        # the sweep's networks may share a table with the study's (they have their own names)
        wanted = {j.network for j in everything + plan_datasize(cfg, splits)}
        rows = {r["network"]: r for r in read_runs(runs_path)}
        dropped = sorted(set(rows) - wanted)
        write_runs(runs_path, ordered({k: v for k, v in rows.items() if k in wanted}, everything))
        if cfg.study.mlflow:
            from transferability.tracking import Tracker

            Tracker(cfg, Study(cfg, splits, dataset), everything, None).prune(wanted)
    log(f"{runs_path}: {len(dropped)} row(s) dropped, {len(rows) - len(dropped)} kept")
    return dropped


# ---------------------------------------------------------------------- reproduction check


def default_sample(jobs: list[Job]) -> list[str]:
    """A base and two networks that copy it: baseB of the first block, B1B+ and B(top)B."""
    first = jobs[0]
    block = [j for j in jobs if (j.split, j.seed) == (first.split, first.seed)]
    base = next(j for j in block if j.treatment == "base" and j.target_task == "B")
    top = max(j.n for j in block)
    copies = [
        j for j in block if j.source == base and (j.treatment, j.n) in {("BnB+", 1), ("BnB", top)}
    ]
    return [base.network, *(j.network for j in copies)]


def reproduce(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    runs_path: Path,
    networks: list[str],
    workdir: Path,
    tolerance: float,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Retrain `networks` (bases first; copies use the retrained base) into `workdir` and compare
    each with its committed row: equal bit for bit when the row's machine is this kind of
    machine, else within `tolerance` accuracy points (another processor takes another path).
    They retrain in the precision their rows record, whatever train.precision says."""
    from transferability.study import machine

    committed = {r["network"]: r for r in read_runs(runs_path)}
    jobs = {j.network: j for j in plan(cfg, splits)}
    unknown = [n for n in networks if n not in jobs or n not in committed]
    if unknown:
        raise ValueError(f"not in the configured study or not in {runs_path}: {unknown}")
    precisions = sorted({committed[n]["precision"] for n in networks})
    if len(precisions) > 1:
        raise ValueError(f"the sample mixes precisions {precisions}: reproduce one at a time")
    local = cfg.model_copy(
        update={
            "study": cfg.study.model_copy(update={"models_dir": str(workdir), "mlflow": False}),
            "train": cfg.train.model_copy(update={"precision": (precisions or ["auto"])[0]}),
        }
    )
    study = Study(local, splits, dataset)
    order = sorted(networks, key=lambda n: jobs[n].treatment != "base")
    out = []
    for name in order:
        job, old = jobs[name], committed[name]
        if job.source is not None and job.source.network not in networks:
            raise ValueError(f"{name} copies {job.source.network}: sample it too")
        row, _ = study.run(job)
        same_machine = old.get("machine") == machine()
        delta = 100 * (float(row["test_acc"]) - float(old["test_acc"]))
        if row["fingerprint"] != old["fingerprint"]:
            verdict = "FAIL: its settings differ from the committed row's"
        elif same_machine:
            verdict = "ok (identical)" if row["test_acc"] == float(old["test_acc"]) else "FAIL"
        else:
            verdict = "ok (within tolerance)" if abs(delta) <= tolerance else "FAIL"
        out.append(
            {
                "network": name,
                "committed": float(old["test_acc"]),
                "rerun": row["test_acc"],
                "delta_points": round(delta, 2),
                "same_machine": same_machine,
                "verdict": verdict,
            }
        )
        log(
            f"{name}: committed {float(old['test_acc']):.4f}, rerun {row['test_acc']:.4f} "
            f"({delta:+.2f} points; {'same' if same_machine else 'other'} machine): {verdict}"
        )
    return out
