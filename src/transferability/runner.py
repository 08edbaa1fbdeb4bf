"""Running a whole study resumably: the results table, what counts as done, the training loop.

The results table (`runs.csv`) is additive: a run writes or replaces the rows of the networks it
trains and leaves every other row alone; `prune` is the explicit way to drop rows that no longer
belong to the configured study. One process at a time writes a table, and one study at a time
writes a checkpoint folder (study.models_dir): a lock file beside each. Every write of a table
goes through `write_runs`: under its lock, atomically, and never losing a row it was not told to
drop. Every read goes through `read_runs`, which refuses a table that is not what this project
wrote: a duplicate network, a number that is not one, a line of the wrong length (`TableError`,
naming the file, line and column).

A network counts as done when its row carries the fingerprint the study now expects and its
checkpoint is that network (`Networks.verify`: fingerprint and network name in the checkpoint, and
the md5 and accuracies the row recorded), copied from the base its table now holds. A stale,
swapped, damaged or edited one is retrained, never used; a base is copied only when its bytes
are the ones its row records. With ``trust_rows`` (resuming a long study on another machine,
where the checkpoints of finished networks are absent) a row whose checkpoint is missing counts
as done too; a missing base is then retrained only if an unfinished network needs it, and those
networks copy the new one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from filelock import FileLock, Timeout

from transferability import data as data_mod
from transferability.config import Config
from transferability.executors import execute
from transferability.io import atomic_write
from transferability.networks import COLUMNS, CheckpointMismatch, Job, Networks, plan, plan_datasize
from transferability.place import claim, identify
from transferability.splits import Split

if TYPE_CHECKING:
    import pandas as pd

    from transferability.tracking.tracker import Tracker

# ---------------------------------------------------------------------- results table

REQUIRED = ("network", "fingerprint", "test_acc")
FRACTIONS = ("test_acc", "val_acc", "train_acc")  # in [0, 1]; val_acc nan: no validation split
AMOUNTS = ("train_loss", "seconds")  # finite, >= 0


class TableError(ValueError):
    """A results table that cannot be used as it is; the message names file, line and column."""


def read_runs(path: Path) -> list[dict]:
    """The rows of a results table ([] when there is none), checked line by line: a foreign
    table, a network on two lines (as a merge leaves it), a line with too many or too few
    fields, or an accuracy that is not a number in [0, 1] is a `TableError` naming the line.
    Columns this project does not write are kept (and written back by `write_runs`). A row
    from before the `precision` column was trained in fp32, and reads so."""
    path = Path(path)
    if not path.exists():
        return []
    # utf-8-sig: a byte-order mark (a spreadsheet's save) is not part of the first column's name
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise TableError(
                f"{path} is not a results table of this project (no column "
                f"{', '.join(sorted(missing))}); move it away or name another with --runs"
            )
        twice = sorted(c for c, k in Counter(header).items() if k > 1)
        if twice:
            raise TableError(f"{path} line 1: column(s) {', '.join(twice)} named twice")
        rows, lines = [], {}
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or None in row.values():
                n = len(row.get(None, [])) + sum(v is not None for k, v in row.items() if k)
                raise TableError(
                    f"{where}: {n} fields where the header has {len(header)} (a damaged or "
                    f"hand-edited line): restore the table from git, or delete the line to "
                    "retrain its network"
                )
            _check_row(row, where)
            name = row["network"]
            if name in lines:
                raise TableError(
                    f"{path}: {name} is on line {lines[name]} and on line {reader.line_num} (as "
                    "a merge of two tables leaves it): keep the line whose checkpoint_md5 is the "
                    "checkpoint's, delete the other"
                )
            lines[name] = reader.line_num
            rows.append(row | {"precision": row.get("precision") or "fp32"})
    return rows


def _check_row(row: dict, where: str) -> None:
    if not row["network"].strip():
        raise TableError(f"{where}: no network name")
    for col in (*FRACTIONS, *AMOUNTS):
        if col not in row:
            continue
        text = row[col]
        try:
            x = float(text)
        except ValueError:
            x = None
        if col == "val_acc" and x is not None and math.isnan(x):
            continue
        ok = x is not None and (0 <= x <= 1 if col in FRACTIONS else 0 <= x < math.inf)
        if not ok:
            what = "a number from 0 to 1" if col in FRACTIONS else "a finite number >= 0"
            raise TableError(
                f"{where} ({row['network']}): {col} is {text!r}, not {what}: restore the line "
                "from git, or delete it to retrain the network"
            )


def write_checked(
    compute: Callable,
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    tables: Iterable[Path],
    out: Path,
    log: Callable[[str], None] = print,
    only: Collection[str] | None = None,
):
    """A stage that reads checkpoints (similarity, diagnostics): `compute(cfg, splits, dataset,
    log=, md5s=, out=, only=)`, every checkpoint it reads checked against the md5 its row in one
    of the results `tables` records (a missing table is an error naming it); it writes its
    table to `out` block by block (`blockwise`) and returns it."""
    tables = [Path(p) for p in tables]
    missing = [str(p) for p in tables if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"results table not found: {', '.join(missing)}")
    md5s = {r["network"]: r["checkpoint_md5"] for p in tables for r in read_runs(p)}
    return compute(cfg, splits, dataset, log=log, md5s=md5s, out=out, only=only)


Block = tuple[str, int]
BLOCK_COLUMNS = ["machine", "precision", "block_key"]  # what `blockwise` adds to every row


def block_name(block: Block) -> str:
    return f"{block[0]}/s{block[1]}"


def block_key(md5s: dict[str, str] | None, networks: Networks, jobs: list[Job], **decides) -> str:
    """The key text of a block of a stage that reads checkpoints (`blockwise`): what decides its
    rows (`decides`: the stage's settings and code version, the precision) and each network it
    reads, as configured now (fingerprint) with the bytes its results row records (`md5s`;
    "" where none does: such a block is never kept, and `need_checkpoints` refuses to compute
    it)."""
    checkpoints = {
        j.network: [networks.fingerprint(j), (md5s or {}).get(j.network, "")] for j in jobs
    }
    return json.dumps({**decides, "checkpoints": checkpoints}, sort_keys=True)


def need_checkpoints(
    networks: Networks, jobs: Iterable[Job], md5s: dict[str, str] | None = None
) -> None:
    """Refuse, before anything is computed or written, to compute blocks whose networks have no
    row recording their md5 (where `md5s` is given: the runs tables read) or whose checkpoints
    are not on this machine."""
    jobs = list(jobs)
    if md5s is not None:
        unrecorded = [j.network for j in jobs if not md5s.get(j.network)]
        if unrecorded:
            raise ValueError(
                f"no results row records the checkpoint of {_some(unrecorded)}: train them, or "
                "name the runs tables that hold them (--runs)"
            )
    missing = [j.network for j in jobs if not networks.checkpoint(j).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} checkpoint(s) to read are not on this machine ({_some(missing)}): "
            "train their blocks again (pipelines/by_block.sh), or compute only the blocks that "
            "are here (--block)"
        )


def blockwise(
    out: Path | None,
    keys: dict[Block, str],
    compute: Callable[[list[Block]], Iterable[tuple[Block, pd.DataFrame]]],
    columns: list[str],
    stamp: dict[str, str],
    only: Collection[str] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """The table of a stage that reads checkpoints, computed block by block and kept across
    machines and sessions, as the results tables are. `keys[block]` is the text of everything
    that decides a block's rows (`block_key`); its digest is each row's `block_key`. A block
    whose rows in `out` carry its digest is kept, not computed again, even where its
    checkpoints are absent (another machine, a later session). The others are computed
    (`compute(todo)` yields each block's rows, stamped with `stamp`: machine and precision) and
    `out` is rewritten after each, under its lock, so a stage stopped half-way keeps its finished
    blocks. `only` (block names, random1/s0) narrows what is computed now; a block neither kept
    nor computed is left out, and said so. Rows of blocks the study no longer holds are dropped.
    With `out` None nothing is kept or written. The table's `attrs["computed"]` names the blocks
    computed now."""
    import pandas as pd

    names = {block_name(b): b for b in keys}
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(
            f"--block: {', '.join(unknown)} not among the study's blocks ({', '.join(names)})"
        )
    digests = {b: hashlib.sha256(k.encode()).hexdigest()[:16] for b, k in keys.items()}
    cols = columns + BLOCK_COLUMNS
    with nullcontext() if out is None else locked(out):
        done = _kept_blocks(out, digests)
        for b in done:
            log(f"{block_name(b)}: done before, kept ({out})")
        todo = [b for b in keys if b not in done and (only is None or block_name(b) in only)]

        def table() -> pd.DataFrame:
            parts = [done[b] for b in keys if b in done]
            t = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
            t = t.reindex(columns=cols)
            t.attrs["computed"] = [block_name(b) for b in todo if b in done]
            return t

        def write() -> None:
            if out is not None:
                with atomic_write(out) as f:
                    table().to_csv(f, index=False, float_format="%.6f")

        for block, rows in compute(todo):
            done[block] = rows.assign(**stamp, block_key=digests[block])
            write()
        left = [block_name(b) for b in keys if b not in done]
        if left:
            log(f"not computed yet (--block): {', '.join(left)}; the table leaves them out")
        write()  # also when nothing was computed: rows of blocks no longer held go
    return table()


def _kept_blocks(out: Path | None, digests: dict[Block, str]) -> dict[Block, pd.DataFrame]:
    """The rows of `out` of each block whose every row carries its digest (`blockwise`)."""
    import pandas as pd

    if out is None or not Path(out).is_file():
        return {}
    text = {c: str for c in ("split", "machine", "precision", "block_key")}  # 16 hex digits
    try:
        old = pd.read_csv(out, dtype=text)
        groups = dict(list(old.groupby(["split", "seed"], sort=False)))
    except (ValueError, KeyError, pd.errors.ParserError):  # not this project's: computed again
        return {}
    if "block_key" not in old.columns:  # written before blocks were kept: computed again
        return {}
    kept = {}
    for b, digest in digests.items():
        rows = groups.get(b)
        if rows is not None and (rows.block_key == digest).all() and not rows.duplicated().any():
            kept[b] = rows.reset_index(drop=True)
    return kept


def write_runs(path: Path, rows: list[dict], drop: Iterable[str] = ()) -> None:
    """The one way a results table is written: under its lock (taken here unless this process
    holds it), atomically (a crash leaves the old table or the new, never half), and never
    shorter than meant: a network of the table on disk that is not among `rows` must be named
    in `drop`, else nothing is written (`TableError`). Columns beyond COLUMNS are kept."""
    path = Path(path)
    with nullcontext() if _lock_file(path) in _HELD else locked(path):
        names = Counter(r["network"] for r in rows)
        twice = sorted(n for n, k in names.items() if k > 1)
        if twice:
            raise TableError(f"{path} not written: {_some(twice)} given twice")
        lost = sorted({r["network"] for r in read_runs(path)} - set(names) - set(drop))
        if lost:
            raise TableError(
                f"{path} not written: it would lose {len(lost)} row(s) ({_some(lost)}); "
                "`transferability prune` is the way to drop rows"
            )
        extra = list(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
        with atomic_write(path, "w") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS + extra, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in COLUMNS + extra})


def _some(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


_HELD: set[Path] = set()  # the lock files this process holds


def _lock_file(path: Path) -> Path:
    return Path(f"{path}.lock").absolute()


@contextmanager
def _hold(lock: Path, busy: str) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(lock, timeout=0)
    try:
        file_lock.acquire()
    except Timeout:
        raise RuntimeError(busy) from None
    _HELD.add(lock)
    try:
        yield
    finally:
        _HELD.discard(lock)
        file_lock.release()


def locked(path: Path) -> Iterator[None]:
    """Hold the lock of results table `path`; a second writer is refused with a clear message."""
    lock = _lock_file(path)
    return _hold(
        lock,
        f"another study is writing {path} (lock {lock} is held): wait for it to finish, or "
        "give this one another study.results_dir / --runs",
    )


def locked_models(models_dir: str | Path) -> Iterator[None]:
    """Hold the lock of a checkpoint folder (study.models_dir): two studies that write one
    folder would overwrite each other's checkpoints, so the second is refused."""
    lock = (Path(models_dir) / ".study.lock").absolute()
    return _hold(
        lock,
        f"another study is writing checkpoints in {models_dir} (lock {lock} is held): wait for "
        "it to finish, or give this one another study.models_dir",
    )


def merge_runs(paths: list[Path], into: Path) -> list[dict]:
    """Merge results tables into `into` (analyze --runs): each is read and checked, a network
    in two of them is an error naming both, and `into` is only ever added to: a row of it that
    the merge would drop or change is an error, and nothing is written. Returns the rows."""
    into = Path(into)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"results table not found: {', '.join(missing)}")
    rows, source = {}, {}
    for p in map(Path, paths):
        for r in read_runs(p):
            if r["network"] in rows:
                raise TableError(
                    f"{r['network']} is in both {source[r['network']]} and {p}: a network "
                    "belongs to one table; remove it from one of them"
                )
            rows[r["network"]], source[r["network"]] = r, p
    with locked(into):
        for r in read_runs(into):
            new = rows.get(r["network"])
            if new is None or any(new.get(k, "") != v for k, v in r.items()):
                how = "drop" if new is None else "change"
                raise TableError(
                    f"analyze would {how} the row of {r['network']} in {into}, which holds rows "
                    f"that are not in {', '.join(map(str, paths))}: name {into} among --runs "
                    f"to add to it, or, if the tables given are the whole study, move {into} "
                    "away (it is written anew from them)"
                )
        write_runs(into, list(rows.values()))
    return list(rows.values())


def ordered(rows: dict[str, dict], jobs: list[Job]) -> list[dict]:
    """The study's rows in plan order, then any other rows of the table in name order."""
    planned = [rows[j.network] for j in jobs if j.network in rows]
    known = {j.network for j in jobs}
    return planned + [rows[k] for k in sorted(rows) if k not in known]


def clean_leftovers(runs_path: Path, models_dir: str | Path) -> list[Path]:
    """Remove the temporary files that a killed write leaves (`atomic_write`'s .<name>.*.tmp)
    beside table `runs_path` and under `models_dir`; call it holding both locks, when no other
    process can be writing them. Returns what was removed."""
    runs_path = Path(runs_path)
    found = [*runs_path.parent.glob(f".{runs_path.name}.*.tmp")]
    if Path(models_dir).is_dir():
        found += Path(models_dir).rglob(".*.pt.*.tmp")
    for p in found:
        p.unlink(missing_ok=True)
    return found


# ---------------------------------------------------------------------- what is done


def not_done(networks: Networks, job: Job, rows: dict[str, dict], trust_rows: bool = False) -> str:
    """Why `job` must be (re)trained given the table's `rows`; "" when it is done."""
    source = rows.get(job.source.network) if job.source else None
    return networks.stale(job, rows.get(job.network), source, trust_rows)


def todo(
    networks: Networks,
    jobs: list[Job],
    rows: dict[str, dict],
    trust_rows: bool,
    reasons: dict[str, str] | None = None,
) -> list[Job]:
    """The networks of `jobs` to (re)train, bases first; with trust_rows, a base whose checkpoint
    is missing is retrained only when an unfinished network copies it. `reasons` gets why each
    row that is there, with the settings now configured, is retrained all the same."""
    left = []
    for j in jobs:
        why = not_done(networks, j, rows, trust_rows)
        if why:
            left.append(j)
            if why not in ("no row", "its settings changed") and reasons is not None:
                reasons[j.network] = why
    needed = {j.source for j in left if j.source is not None}
    for base in {j for j in needed if not networks.checkpoint(j).is_file()} - set(left):
        left.append(base)
    return [j for j in jobs if j in left] + [j for j in left if j not in jobs]


def _say_other_precision(networks: Networks, cfg: Config, rows: list[dict], log) -> None:
    """Say so when rows about to be retrained were trained in another precision than this
    machine's: under train.precision auto a study resumed on another kind of processor (with or
    without native bf16) otherwise starts again, as new networks, without a word why."""
    other = sorted({r["precision"] for r in rows} - {networks.precision})
    if other:
        n = sum(r["precision"] in other for r in rows)
        log(
            f"{n} of the networks to train have rows trained in {', '.join(other)}: here they "
            f"train again in {networks.precision} (train.precision: {cfg.train.precision}), as "
            f"new networks; if no other setting changed, train.precision: {other[0]} resumes "
            "them instead"
        )


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
    bases: Path | None = None,
) -> list[dict]:
    """Train every network of `which` (all | bases | transfers of the study, or datasize: the
    target-size sweep, whose AnB+ copy the study's bases) not already done; returns the rows of
    `which`. `bases`: another table that holds the rows of the bases copied (the DVC stages
    keep them in runs_bases.csv), whose md5s a base copied must have.

    Each finished network is committed at once (checkpoint, then the table rewritten
    atomically, then its MLflow run), so an interrupted study loses at most the networks in
    progress; a network whose MLflow log failed is logged on the next run.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    runs_path = Path(runs_path)
    # the table and the checkpoint folder: another study writing either would mix results
    with locked(runs_path), locked_models(cfg.study.models_dir):
        claim(runs_path.parent, identify(cfg, dataset.classes))  # one dataset's rows per folder
        gone = clean_leftovers(runs_path, cfg.study.models_dir)
        networks = Networks(cfg, splits, dataset)
        everything = (plan_datasize if which == "datasize" else plan)(cfg, splits)
        jobs = select(everything, which)
        rows = {r["network"]: r for r in read_runs(runs_path)}
        known = {r["network"]: r for r in read_runs(bases)} if bases else {}
        reasons: dict[str, str] = {}
        left = todo(networks, jobs, known | rows, trust_rows, reasons)
        if which in ("transfers", "datasize"):
            _check_bases(networks, jobs, left, known | rows)
        log(
            f"{len(jobs)} networks in this study ({which}); {len(jobs) - len(left)} done, "
            f"{len(left)} to train on {networks.device} in {networks.precision} ({_where(cfg)})"
        )
        for name, why in reasons.items():
            log(f"{name}: retrained: {why}")
        retrained = [rows[j.network] for j in left if j.network in rows]
        _say_other_precision(networks, cfg, retrained, log)
        if gone:
            log(f"removed {len(gone)} temporary file(s) that an interrupted write left behind")
        run = StudyRun(networks, everything, rows, known, runs_path, log)
        run.tracker = _tracker(run, jobs, left)
        # the tracker ends its parent run KILLED on Ctrl-C and FAILED on an error, never RUNNING
        with run.tracker or nullcontext():
            try:
                _train_left(run, left)
            except KeyboardInterrupt:
                log(f"interrupted: {len(rows)} rows kept in {runs_path}; run again to resume")
                raise
            if run.tracker:
                run.tracker.finish(status="FAILED" if run.failed else "FINISHED")
    if run.failed:
        raise RuntimeError(
            f"{len(run.failed)} network(s) failed (retried up to {cfg.study.retries} times where "
            "a retry can help; the others are saved; fix the cause and run again):\n  "
            + "\n  ".join(run.failed)
        )
    mine = {j.network for j in jobs}
    return [r for r in read_runs(runs_path) if r["network"] in mine]


def _where(cfg: Config) -> str:
    ex = cfg.study
    return (
        f"{ex.workers} local workers" if ex.executor == "local" and ex.workers > 1 else ex.executor
    )


def _check_bases(networks: Networks, jobs: list[Job], left: list[Job], rows: dict) -> None:
    """Bases that come from an earlier run (not among `jobs`) must be there, and be what their
    rows record when this table holds them: say so before starting."""
    missing, wrong = set(), {}
    for src in {j.source for j in left if j.source and j.source not in jobs}:
        path = networks.checkpoint(src)
        if not path.is_file():
            missing.add(str(path))
        elif src.network in rows and (why := not_done(networks, src, rows)):
            wrong[src.network] = why
    if missing:
        raise FileNotFoundError(
            f"base checkpoint(s) missing: {', '.join(sorted(missing))}: train the bases first"
        )
    if wrong:
        raise CheckpointMismatch(
            "base(s) that would be copied are not what the table records: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(wrong.items()))
            + ": run `transferability train-bases` to retrain them"
        )


@dataclass
class StudyRun:
    """One run of `run_study`: the study, what it holds, the table it writes and what the
    training loop records as it goes."""

    networks: Networks
    everything: list[Job]  # every network of the study, in the order the table keeps
    rows: dict[str, dict]  # the table's rows by network, a finished network's added at once
    known: dict[str, dict]  # rows of another table (--bases) that hold the bases copied
    runs_path: Path
    log: Callable[[str], None] = print
    tracker: Tracker | None = None
    failed: list[str] = field(default_factory=list)  # "network: error" of each that failed


def _tracker(run: StudyRun, jobs: list[Job], left: list[Job]) -> Tracker | None:
    """The MLflow tracker, with what a killed run left half-logged repaired, and finished
    networks of `jobs` (not `left` to train) that have no finished run yet logged."""
    networks = run.networks
    if not networks.cfg.study.mlflow:
        return None
    from transferability.tracking.tracker import Tracker

    tracker = Tracker(networks.cfg, networks, run.everything, Path(networks.cfg.data.prepared))
    repaired = tracker.repair()
    if repaired:
        run.log(
            f"MLflow: {len(repaired)} run(s) a killed study left unfinished removed; logged anew"
        )
    for job in jobs:
        if job not in left and job.network in run.rows and not tracker.run_id_of(job.network):
            path = networks.checkpoint(job)
            history = networks.verify(job, path).get("history", []) if path.is_file() else []
            _log(tracker, job, run.rows[job.network], history, run.log)
    return tracker


def _log(tracker, job, row, history, log) -> None:
    """Log one network to MLflow; a failure costs the run, never the row (logged next time)."""
    try:
        tracker.log_network(job, row, history)
    except Exception as e:  # the row is already committed: say so and go on
        log(
            f"{job.network}: MLflow log failed ({type(e).__name__}: {e}); row kept, logged next run"
        )


def _train_left(run: StudyRun, left: list[Job]) -> None:
    """Train the networks `left`, bases first; each finished one is committed at once (its
    row written to the table, then its MLflow run), each failed one added to `run.failed`."""
    done = 0
    # bases before the transfers that copy them; within each phase networks are independent
    for phase in (
        [j for j in left if j.treatment == "base"],
        [j for j in left if j.treatment != "base"],
    ):
        # a copy takes its base only with the bytes the base's row records (when it has one)
        md5s = {k: r.get("checkpoint_md5", "") for k, r in (run.known | run.rows).items()}
        for job, result, error in execute(run.networks, phase, md5s):
            done += 1
            if error is not None:
                run.failed.append(f"{job.network}: {error}")
                run.log(f"[{done}/{len(left)}] {job.network}: FAILED ({error})")
                continue
            row, history = result
            run.rows[job.network] = row
            write_runs(run.runs_path, ordered(run.rows, run.everything))
            if run.tracker:
                _log(run.tracker, job, row, history, run.log)
            run.log(
                f"[{done}/{len(left)}] {job.network}: val {row['val_acc']:.4f} "
                f"test {row['test_acc']:.4f} ({row['seconds']:.0f}s)"
            )
            sys.stdout.flush()


def prune(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    runs_path: Path,
    log=print,
    yes: bool = False,
) -> list[str]:
    """The rows (and MLflow runs) of networks the configured study no longer holds: listed, and
    with `yes` dropped. Returns those networks."""
    runs_path = Path(runs_path)
    with locked(runs_path):
        everything = plan(cfg, splits)
        # the sweep's networks may share a table with the study's (they have their own names)
        wanted = {j.network for j in everything + plan_datasize(cfg, splits)}
        rows = {r["network"]: r for r in read_runs(runs_path)}
        dropped = sorted(set(rows) - wanted)
        kept = len(rows) - len(dropped)
        if yes and dropped:
            keep = {k: rows[k] for k in rows if k in wanted}
            write_runs(runs_path, ordered(keep, everything), drop=dropped)
        runs = []
        if cfg.study.mlflow:
            from transferability.tracking.tracker import Tracker

            # finds the study's parent run, never creates one: a study with none has no runs
            tracker = Tracker(cfg, Networks(cfg, splits, dataset), everything, None, create=False)
            runs = tracker.prune(wanted, dry_run=not yes) if tracker.parent_id else []
    if yes:
        log(
            f"{runs_path}: {len(dropped)} row(s) and {len(runs)} MLflow run(s) dropped, {kept} kept"
        )
    elif dropped or runs:
        log(
            f"{runs_path}: would drop {len(dropped)} row(s) ({_some(dropped, 10)}) and "
            f"{len(runs)} MLflow run(s) of networks the settings given do not hold, keeping "
            f"{kept}; nothing dropped: run again with --yes to drop them"
        )
    else:
        log(f"{runs_path}: all {len(rows)} row(s) belong to the configured study")
    return dropped


# ---------------------------------------------------------------------- reproduction check


def default_sample(jobs: list[Job]) -> list[str]:
    """A base and a network that copies it: baseB of the first block and B(top)B, its top
    layers frozen and the classifier retrained (the cheapest copy: CI runs it)."""
    first = jobs[0]
    block = [j for j in jobs if (j.split, j.seed) == (first.split, first.seed)]
    base = next(j for j in block if j.treatment == "base" and j.target_task == "B")
    top = max(j.n for j in block)
    copies = [j for j in block if j.source == base and (j.treatment, j.n) == ("BnB", top)]
    return [base.network, *(j.network for j in copies)]


def reproduce(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    runs_path: Path,
    sample: list[str],
    workdir: Path,
    tolerance: float,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Retrain the networks named in `sample` (bases first; copies use the retrained base) into
    `workdir` and compare each with its committed row: equal bit for bit when the row's machine
    is this kind of machine, else within `tolerance` accuracy points (another processor takes
    another path). On the same kind of processor a network is retrained with the thread count
    its row records (another count sums in another order), whatever train.threads or
    OMP_NUM_THREADS say; every network retrains in the precision its row records, whatever
    train.precision says."""
    from transferability.train import processor

    committed = {r["network"]: r for r in read_runs(runs_path)}
    jobs = {j.network: j for j in plan(cfg, splits)}
    unknown = [n for n in sample if n not in jobs or n not in committed]
    if unknown:
        raise ValueError(f"not in the configured study or not in {runs_path}: {unknown}")
    precisions = sorted({committed[n]["precision"] for n in sample})
    if len(precisions) > 1:
        raise ValueError(f"the sample mixes precisions {precisions}: reproduce one at a time")
    local = cfg.model_copy(
        update={
            "study": cfg.study.model_copy(update={"models_dir": str(workdir), "mlflow": False}),
            "train": cfg.train.model_copy(update={"precision": (precisions or ["auto"])[0]}),
        }
    )
    networks = Networks(local, splits, dataset)
    order = sorted(sample, key=lambda n: jobs[n].treatment != "base")
    out = []
    for name in order:
        job, old = jobs[name], committed[name]
        if job.source is not None and job.source.network not in sample:
            raise ValueError(f"{name} copies {job.source.network}: sample it too")
        kind, _, threads = old.get("machine", "").rpartition("; ")
        count = threads.removesuffix(" threads")
        same_machine = kind == processor() and count.isdigit() and int(count) > 0
        before = torch.get_num_threads()
        torch.set_num_threads(int(count) if same_machine else cfg.train.threads or before)
        try:
            row, _ = networks.run(job)
        finally:
            torch.set_num_threads(before)
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


def check_reproduction(
    cfg: Config,
    splits: list[Split],
    dataset: data_mod.Dataset,
    runs_path: Path,
    sample: list[str],
    log: Callable[[str], None] = print,
) -> list[dict]:
    """`transferability reproduce`: `reproduce` the sample (by default `default_sample`) in a
    temporary folder; raises naming the networks that did not reproduce."""
    import tempfile

    sample = list(sample) or default_sample(plan(cfg, splits))
    with tempfile.TemporaryDirectory() as tmp:
        rows = reproduce(
            cfg,
            splits,
            dataset,
            runs_path,
            sample,
            Path(tmp),
            cfg.analysis.reproduce_tolerance,
            log,
        )
    failed = [r["network"] for r in rows if r["verdict"].startswith("FAIL")]
    if failed:
        raise RuntimeError(f"not reproduced: {', '.join(failed)}")
    return rows
