"""The `transferability` command: one subcommand per step of the study."""

from __future__ import annotations

import functools
import signal
import time
from pathlib import Path

import click

from transferability import config as config_mod
from transferability import data as data_mod
from transferability.place import placed
from transferability.splits import configured_splits, load_splits, write_splits


def with_params(fn):
    """Add --params and --set to a command and hand it the validated Config as `cfg`."""

    @click.option(
        "--params",
        "params_path",
        default="params.yaml",
        show_default=True,
        envvar="TRANSFERABILITY_PARAMS",  # how a second study's DVC stages name their settings
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help="Settings file; a missing params.yaml means the built-in defaults.",
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a setting, e.g. --set train.epochs=3 --set split.random_seeds=[0,1].",
    )
    @functools.wraps(fn)
    def wrapper(params_path, overrides, **kwargs):
        cfg = placed(config_mod.load(params_path, list(overrides)), log=click.echo)
        return fn(cfg=cfg, **kwargs)

    return wrapper


def _dataset(cfg: config_mod.Config) -> data_mod.Dataset:
    return data_mod.load(Path(cfg.data.prepared))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="transferability")
def cli():
    """Yosinski et al. (2014), "How transferable are features in deep neural networks?",
    on CIFAR-10.

    Settings come from params.yaml, overridden with --set KEY=VALUE.
    """


@cli.command()
@with_params
def prepare(cfg):
    """Decode the data source once into the uint8 cache (data.prepared)."""
    _prepare(cfg)


def _prepare(cfg) -> data_mod.Dataset:
    t = time.perf_counter()
    path = data_mod.prepare(
        cfg.data.source, Path(cfg.data.prepared), cfg.data.image_size, Path(cfg.data.download_root)
    )
    ds = data_mod.load(path)
    click.echo(
        f"{path}: {len(ds.train_x)} train + {len(ds.test_x)} test images, {len(ds.classes)} "
        f"classes, {ds.image_size}px ({time.perf_counter() - t:.1f}s)"
        + (f"; decoding changed them: {ds.conversions}" if ds.conversions else "")
    )
    return ds


@cli.command()
@with_params
def split(cfg):
    """Write the A/B class lists of every configured split (split.dir)."""
    _write_splits(cfg, _dataset(cfg))


def _write_splits(cfg, ds: data_mod.Dataset) -> None:
    for path, s in write_splits(cfg, ds.classes):
        click.echo(f"{path}: A={list(s.A)} B={list(s.B)}")


def _runs_path(cfg, runs: str | None) -> Path:
    return Path(runs) if runs else Path(cfg.study.results_dir) / "runs.csv"


def _run_study(cfg, which: str, runs: str | None, trust_rows=False, bases: str | None = None):
    """Train the networks of `which` (runner.run_study) into the table `runs`."""
    from transferability.runner import run_study

    ds = _dataset(cfg)
    splits = load_splits(cfg, ds.classes)
    runs_path, t = _runs_path(cfg, runs), time.perf_counter()
    if bases and not Path(bases).is_file():
        raise FileNotFoundError(f"results table of the bases not found: {bases} (--bases)")
    bases_path = Path(bases) if bases else None
    rows = run_study(
        cfg, splits, ds, runs_path, which, log=click.echo, trust_rows=trust_rows, bases=bases_path
    )
    click.echo(f"{len(rows)} networks in {runs_path} ({time.perf_counter() - t:.0f}s this run)")


RUNS_OPTION = click.option(
    "--runs", default=None, help="Results table to add rows to [default: <results_dir>/runs.csv]."
)
BASES_OPTION = click.option(
    "--bases",
    default=None,
    help="Results table that holds the rows of the bases copied, when another than --runs: a "
    "base is copied only with the md5 its row records.",
)
TRUST_ROWS = click.option(
    "--trust-rows",
    is_flag=True,
    help="A finished row whose checkpoint is absent (trained on another machine) counts as "
    "done; a missing base is retrained only for the networks still to train.",
)


@cli.command("train-bases")
@with_params
@RUNS_OPTION
@TRUST_ROWS
def train_bases(cfg, runs, trust_rows):
    """Train baseA and baseB of every split and seed."""
    _run_study(cfg, "bases", runs, trust_rows)


@cli.command()
@with_params
@RUNS_OPTION
@BASES_OPTION
@TRUST_ROWS
def transfer(cfg, runs, bases, trust_rows):
    """Train every transfer network (BnB, BnB+, AnB, AnB+, RnB at every cut)."""
    _run_study(cfg, "transfers", runs, trust_rows, bases)


@cli.command()
@with_params
@click.option(
    "--runs", default=None, help="Results table [default: <results_dir>/runs_datasize.csv]."
)
@BASES_OPTION
@TRUST_ROWS
def datasize(cfg, runs, bases, trust_rows):
    """The target-size sweep (beyond the paper): baseB, BnB+ and AnB+ trained on smaller target
    sets (beyond.datasize_per_class); AnB+ copies the study's bases, so train those first."""
    runs = runs or str(Path(cfg.study.results_dir) / "runs_datasize.csv")
    _run_study(cfg, "datasize", runs, trust_rows, bases)
    # the stage's checkpoint folder and table are DVC outputs: there even when the sweep trains
    # none (a table of no rows: its header)
    Path(cfg.study.models_dir, "datasize").mkdir(parents=True, exist_ok=True)
    if not Path(runs).is_file():
        from transferability.runner import write_runs

        write_runs(Path(runs), [])


# the results tables whose rows' md5s every checkpoint that a command reads must have
_md5_tables = click.option(
    "--runs",
    multiple=True,
    help="Results tables whose rows' md5s every checkpoint read must have "
    "[default: <results_dir>/runs_bases.csv and runs_transfers.csv, else runs.csv].",
)
_only_blocks = click.option(
    "--block",
    "blocks",
    multiple=True,
    help="Compute only these blocks now (random1/s0; repeat for more), keeping the others' rows "
    "as they are [default: every block not done before].",
)


@cli.command()
@with_params
@click.option("--out", default=None, help="CKA table [default: <results_dir>/cka.csv].")
@_md5_tables
@_only_blocks
def similarity(cfg, out, runs, blocks):
    """Linear CKA, layer by layer, between baseA and baseB and between every fine-tuned network
    and the base it copied, on the same test images (beyond the paper; inference only)."""
    from transferability.similarity import layer_similarity

    _write_checked(cfg, runs, out, blocks, "cka.csv", layer_similarity, "layer comparisons")


def _default_tables(cfg) -> list[Path]:
    """The study's runs tables: the stages' (runs_bases.csv, runs_transfers.csv) where they are
    there, else <results_dir>/runs.csv if there."""
    results = Path(cfg.study.results_dir)
    stages = [results / "runs_bases.csv", results / "runs_transfers.csv"]
    return (
        stages
        if all(p.is_file() for p in stages)
        else [p for p in [_runs_path(cfg, None)] if p.is_file()]
    )


def _write_checked(cfg, runs, out, blocks, default: str, compute, what: str, then=None):
    """The similarity and diagnostics commands: `runner.write_checked` on the given runs tables
    (default: `_default_tables`), to `out` (default: <results_dir>/`default`), computing
    only `blocks` if any are named; then `then(cfg, splits, dataset, table)` if given."""
    from transferability.runner import write_checked

    ds, t = _dataset(cfg), time.perf_counter()
    tables = [Path(r) for r in runs] or _default_tables(cfg)
    out = Path(out) if out else Path(cfg.study.results_dir) / default
    splits = load_splits(cfg, ds.classes)
    table = write_checked(compute, cfg, splits, ds, tables, out, click.echo, blocks or None)
    click.echo(f"{len(table)} {what} → {out} ({time.perf_counter() - t:.0f}s)")
    if then is not None:
        then(cfg, splits, ds, table)


@cli.command()
@with_params
@click.option("--out", default=None, help="Table [default: <results_dir>/diagnostics.csv].")
@_md5_tables
@_only_blocks
def diagnostics(cfg, out, runs, blocks):
    """Model stitching, layer re-initialisation, interpolation after fine-tuning and weight
    scale alone (beyond.diagnostics) on the first beyond.blocks random blocks (beyond the paper;
    transfusion trains, the others are inference or train a stitch only)."""
    from transferability.diagnostics import network_diagnostics

    _write_checked(
        cfg,
        runs,
        out,
        blocks,
        "diagnostics.csv",
        network_diagnostics,
        "diagnostic rows",
        _log_blocks,
    )


def _log_blocks(cfg, splits, ds, table) -> None:
    """The diagnostics in MLflow (study.mlflow): a run per block beside the block's networks,
    under their parent run. No store, no parent run or an error costs the MLflow record, never
    the table: a note says so. Only the blocks computed now are logged (a block kept from before
    was logged when computed)."""
    computed = table.attrs.get("computed", [])  # a block kept from before was logged then
    table = table[(table.split + "/s" + table.seed.astype(str)).isin(computed)]
    if not cfg.study.mlflow or table.empty:
        return
    from transferability.networks import Networks, plan
    from transferability.tracking.store import sqlite_file, tracking_uri
    from transferability.tracking.tracker import Tracker

    db = sqlite_file(tracking_uri())
    if db is not None and not db.is_file():
        click.echo(f"MLflow: no store at {db} (no network was logged): diagnostics not logged")
        return
    try:
        networks = Networks(cfg, splits, ds)
        tracker = Tracker(cfg, networks, plan(cfg, splits), create=False)
        ids = tracker.log_diagnostics(table, networks.precision)
    except Exception as e:
        click.echo(
            f"MLflow: diagnostics not (all) logged ({type(e).__name__}: {str(e)[:300]}); the "
            "table is kept"
        )
        return
    missing = [b for b in sorted(computed) if b not in ids]
    click.echo(
        f"MLflow: {len(ids)} block(s) of diagnostics logged beside their networks"
        + (f"; no run of the bases of {', '.join(missing)}: not logged" if missing else "")
    )


@cli.command()
@with_params
@RUNS_OPTION
@click.option("--yes", is_flag=True, help="Drop them; without it, only list what would go.")
def prune(cfg, runs, yes):
    """Drop the rows and MLflow runs of networks the configured study no longer holds (a dry
    run, listing them, unless --yes)."""
    from transferability.runner import prune as prune_rows

    ds = _dataset(cfg)
    splits = load_splits(cfg, ds.classes)
    prune_rows(cfg, splits, ds, _runs_path(cfg, runs), log=click.echo, yes=yes)


@cli.command()
@with_params
@click.option(
    "--runs",
    "runs",
    multiple=True,
    help="Results tables to read (several are merged into <results_dir>/runs.csv) "
    "[default: <results_dir>/runs.csv].",
)
@click.option(
    "--sweep",
    default=None,
    help="The target-size sweep's table [default: <results_dir>/runs_datasize.csv, if there].",
)
@click.option(
    "--cka", default=None, help="Layer similarities [default: <results_dir>/cka.csv, if there]."
)
@click.option(
    "--diagnostics",
    "diag",
    default=None,
    help="The diagnostics [default: <results_dir>/diagnostics.csv, if there].",
)
def analyze(cfg, runs, sweep, cka, diag):
    """Accuracies, gaps, Table 1, the claims, and the work beyond the paper → results/."""
    _analyze(cfg, runs, sweep, cka, diag)


def _analyze(cfg, runs, sweep=None, cka=None, diag=None) -> None:
    from transferability.aggregate import aggregate, console_summary

    summary = aggregate(cfg, [Path(r) for r in runs], sweep, cka, diag)
    click.echo(console_summary(summary, Path(cfg.study.results_dir)))


@cli.command()
@with_params
@TRUST_ROWS
def study(cfg, trust_rows):
    """The whole study in one go: prepare, split, bases, transfers, analyze."""
    t = time.perf_counter()
    _write_splits(cfg, _prepare(cfg))
    _run_study(cfg, "all", None, trust_rows)
    _analyze(cfg, ())
    click.echo(f"\nstudy finished in {time.perf_counter() - t:.0f}s")


@cli.command()
@with_params
@click.option("--images", default=5000, show_default=True, help="Training images to time on.")
@click.option(
    "--rounds",
    default=5,
    show_default=True,
    help="Timings per path (one epoch each), interleaved; the best counts.",
)
@click.option("--loader-workers", default=2, show_default=True, help="DataLoader workers.")
@click.option("--json", "json_path", default=None, help="Also write the figures to this file.")
@click.option(
    "--study",
    "study_mode",
    is_flag=True,
    help="Time the study itself instead: train the first block of the configured study "
    "(shrink it with --set, e.g. train.epochs=4 study.cuts=[1,3]) as a study trains, in a "
    "temporary folder; networks per hour and image-epochs per second beside the compute "
    "bound, and each profile's cost at that rate.",
)
@click.option(
    "--profiles",
    "profiles_path",
    default="profiles.yaml",
    show_default=True,
    help="With --study: the profiles to cost (and the reference, --params as it is).",
)
def bench(cfg, images, rounds, loader_workers, json_path, study_mode, profiles_path):
    """Training images/s: DataLoader pipeline vs the project's path vs the compute bound; with
    --study, the networks per hour of a block of the study."""
    from transferability.bench import benchmark
    from transferability.io import write_json

    ds = _dataset(cfg)
    splits = configured_splits(cfg, ds.classes)
    params = click.get_current_context().params["params_path"]
    text, figures = benchmark(
        cfg, ds, splits, images, rounds, loader_workers, study_mode, params, profiles_path
    )
    click.echo(text)
    if json_path:
        write_json(json_path, figures)
        click.echo(f"figures → {json_path}")


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected integers separated by commas", param_hint=name
        ) from None


def _pilot_runs(cfg, budgets, tasks: str, seeds: str, out: Path, selffer: bool):
    """Bases (and with `selffer` their top-cut selffers) of the first split at each budget not
    yet in `out` (pilot.run_pilot): the pilot's and the time-to-accuracy benchmark's runs."""
    from transferability.pilot import run_pilot

    ds = _dataset(cfg)
    split = load_splits(cfg, ds.classes)[0]
    seeds_ = _ints(seeds, "--seeds")
    return run_pilot(
        cfg, ds, split, budgets, tasks.split(","), seeds_, out, log=click.echo, selffer=selffer
    )


@cli.command()
@with_params
@click.option("--per-class", default="500,1000,2000", show_default=True, help="Images per class.")
@click.option("--epochs", default="10,20,40", show_default=True, help="Epochs of each budget.")
@click.option("--tasks", default="A,B", show_default=True)
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--out", default=None, help="Pilot table [default: <results_dir>/pilot.csv].")
def pilot(cfg, per_class, epochs, tasks, seeds, out):
    """The convergence pilot: bases and top-cut selffers at each budget on the first split,
    scored on the validation split; prints the budget that the rule chooses."""
    import pandas as pd

    from transferability.pilot import write_budgets

    budgets = [(p, e) for p in _ints(per_class, "--per-class") for e in _ints(epochs, "--epochs")]
    out = Path(out) if out else Path(cfg.study.results_dir) / "pilot.csv"
    rows = _pilot_runs(cfg, budgets, tasks, seeds, out, selffer=True)
    table, choice = write_budgets(cfg, rows, out)
    with pd.option_context("display.width", 160):
        click.echo(table.round(2).to_string(index=False))
    click.echo(f"seed-to-seed SD {choice['seed_sd']:.2f} points; chosen budget: {choice['chosen']}")


@cli.command("time-to-accuracy")
@with_params
@click.option("--per-class", default=250, show_default=True, help="Images per class.")
@click.option("--epochs", default="20,40,80,160,320", show_default=True, help="Budgets to train.")
@click.option("--tasks", default="A,B", show_default=True)
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--out", default=None, help="Runs [default: <results_dir>/time_to_accuracy.csv].")
@click.option("--margin", default=0.5, show_default=True, help="Points below converged.")
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="Write the curves.")
@click.option("--no-train", is_flag=True, help="Only summarise the runs already in --out.")
def time_to_accuracy(cfg, per_class, epochs, tasks, seeds, out, margin, plot, no_train):
    """Time-to-accuracy benchmark: bases of the first split trained at each budget with the
    settings given (--set ...), scored on the validation split; prints, for every recipe in
    --out, the image-epochs and seconds it needs to come within --margin points of its own
    converged accuracy. Run it once per recipe; rows already in --out are skipped."""
    import pandas as pd

    from transferability.analysis import time_to_accuracy as summarise
    from transferability.bench import plot_time_to_accuracy, time_to_accuracy_text

    out = Path(out) if out else Path(cfg.study.results_dir) / "time_to_accuracy.csv"
    if no_train and not out.is_file():
        raise click.BadParameter(f"{out}: no such runs file", param_hint="--out")
    budgets = [(per_class, e) for e in _ints(epochs, "--epochs")]
    rows = pd.read_csv(out) if no_train else _pilot_runs(cfg, budgets, tasks, seeds, out, False)
    curve, summary = summarise(rows, margin)
    click.echo(time_to_accuracy_text(curve, summary, margin))
    if plot:
        plot_time_to_accuracy(curve, summary, margin, Path(plot))
        click.echo(f"plot → {plot}")


@cli.command()
@with_params
@click.argument("networks", nargs=-1)
@click.option("--runs", default=None, help="Committed results [default: <results_dir>/runs.csv].")
def reproduce(cfg, networks, runs):
    """Retrain a sample of the committed networks and compare (default: the first block's baseB
    and B(top)B): identical on the same kind of machine, within
    analysis.reproduce_tolerance points on another."""
    from transferability.runner import check_reproduction

    ds = _dataset(cfg)
    splits = load_splits(cfg, ds.classes)
    rows = check_reproduction(cfg, splits, ds, _runs_path(cfg, runs), networks, click.echo)
    click.echo(f"reproduced {len(rows)} networks")


@cli.command()
@click.argument("name")
@click.option("--file", "path", default="profiles.yaml", show_default=True)
@click.option("--cli", "as_cli", is_flag=True, help="As this command line's --set flags instead.")
def profile(name, path, as_cli):
    """Print a named profile's overrides as `dvc exp run` flags (-S key=value ...; what
    `make repro PROFILE=name` passes), or with --cli as flags of these commands (--set ...)."""
    import shlex

    flag = "--set" if as_cli else "-S"
    overrides = config_mod.profile_overrides(name, path)
    click.echo(" ".join(f"{flag} {shlex.quote(s)}" for s in overrides))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--no-browser", is_flag=True, help="Print the link only.")
def ui(host, port, no_browser):
    """MLflow's UI on this repository's store, opened on the study's runs table."""
    from transferability.tracking.ui import serve

    raise SystemExit(serve(host, port, open_browser=not no_browser, log=click.echo))


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a study as Ctrl-C does: rows kept, runs marked KILLED


def main(args: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop)
    try:
        cli.main(args, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns SIGINT into Abort
        click.echo("interrupted: finished networks are saved; run again to resume", err=True)
        raise SystemExit(130) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except (ValueError, FileNotFoundError, RuntimeError, config_mod.ConfigError) as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(2) from None
    except OSError as e:  # a full disk, a read-only folder, a symlink loop: name it, no traceback
        click.echo(
            f"Error: {e}\nFree space or fix the path's permissions, then run again (finished "
            "networks are saved).",
            err=True,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
