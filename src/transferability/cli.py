"""The `transferability` command: one subcommand per step of the study."""

from __future__ import annotations

import functools
import signal
import time
from pathlib import Path

import click

from transferability import config as config_mod
from transferability import data as data_mod
from transferability.place import placed, recorded_dataset
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


def _train(cfg, which: str, runs: str | None, trust_rows: bool = False, bases: str | None = None):
    from transferability.runner import run_study

    ds = _dataset(cfg)
    splits = load_splits(cfg, ds.classes)
    runs_path = _runs_path(cfg, runs)
    t = time.perf_counter()
    bases_path = Path(bases) if bases else None
    if bases_path and not bases_path.is_file():
        raise FileNotFoundError(f"results table of the bases not found: {bases} (--bases)")
    rows = run_study(
        cfg, splits, ds, runs_path, which=which, trust_rows=trust_rows, bases=bases_path
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
    _train(cfg, "bases", runs, trust_rows)


@cli.command()
@with_params
@RUNS_OPTION
@BASES_OPTION
@TRUST_ROWS
def transfer(cfg, runs, bases, trust_rows):
    """Train every transfer network (BnB, BnB+, AnB, AnB+, RnB at every cut)."""
    _train(cfg, "transfers", runs, trust_rows, bases)


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
    _train(cfg, "datasize", runs, trust_rows, bases)


@cli.command()
@with_params
@click.option("--out", default=None, help="CKA table [default: <results_dir>/cka.csv].")
@click.option(
    "--runs",
    multiple=True,
    help="Results tables whose rows' md5s every checkpoint read must have "
    "[default: <results_dir>/runs.csv, if there].",
)
def similarity(cfg, out, runs):
    """Linear CKA, layer by layer, between baseA and baseB and between every fine-tuned network
    and the base it copied, on the same test images (beyond the paper; inference only)."""
    from transferability.io import atomic_write
    from transferability.runner import read_runs
    from transferability.similarity import layer_similarity

    ds = _dataset(cfg)
    t = time.perf_counter()
    tables = [Path(r) for r in runs] or [p for p in [_runs_path(cfg, None)] if p.is_file()]
    missing = [str(p) for p in tables if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"results table not found: {', '.join(missing)}")
    md5s = {r["network"]: r["checkpoint_md5"] for p in tables for r in read_runs(p)}
    table = layer_similarity(cfg, load_splits(cfg, ds.classes), ds, log=click.echo, md5s=md5s)
    out = Path(out) if out else Path(cfg.study.results_dir) / "cka.csv"
    with atomic_write(out) as f:
        table.to_csv(f, index=False, float_format="%.6f")
    click.echo(f"{len(table)} layer comparisons → {out} ({time.perf_counter() - t:.0f}s)")


@cli.command()
@with_params
@click.option("--out", default=None, help="Table [default: <results_dir>/diagnostics.csv].")
@click.option(
    "--runs",
    multiple=True,
    help="Results tables whose rows' md5s every checkpoint read must have "
    "[default: <results_dir>/runs.csv, if there].",
)
def diagnostics(cfg, out, runs):
    """Model stitching, layer re-initialisation, interpolation after fine-tuning and weight
    scale alone (beyond.diagnostics) on the first beyond.blocks random blocks (beyond the paper;
    transfusion trains, the others are inference or train a stitch only)."""
    from transferability.diagnostics import network_diagnostics
    from transferability.io import atomic_write
    from transferability.runner import read_runs

    ds = _dataset(cfg)
    t = time.perf_counter()
    tables = [Path(r) for r in runs] or [p for p in [_runs_path(cfg, None)] if p.is_file()]
    missing = [str(p) for p in tables if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"results table not found: {', '.join(missing)}")
    md5s = {r["network"]: r["checkpoint_md5"] for p in tables for r in read_runs(p)}
    splits = load_splits(cfg, ds.classes)
    table = network_diagnostics(cfg, splits, ds, log=click.echo, md5s=md5s)
    out = Path(out) if out else Path(cfg.study.results_dir) / "diagnostics.csv"
    with atomic_write(out) as f:
        table.to_csv(f, index=False, float_format="%.6f")
    click.echo(f"{len(table)} diagnostic rows → {out} ({time.perf_counter() - t:.0f}s)")


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
    from transferability.analysis import analyse
    from transferability.models import num_layers
    from transferability.runner import merge_runs, read_runs
    from transferability.splits import named_splits
    from transferability.study import plan

    out = Path(cfg.study.results_dir)
    merged = out / "runs.csv"
    if runs and [Path(r) for r in runs] != [merged]:
        merge_runs([Path(r) for r in runs], merged)  # only ever adds to it, under its lock
    read_runs(merged)  # a duplicate or edited line is named here, before the analysis
    planned = len(plan(cfg, named_splits(cfg)))
    summary = analyse(
        merged,
        out,
        num_layers(cfg.model.arch),
        cfg.analysis,
        pilot_path=out / "pilot_budgets.csv",
        planned=planned,
        directions=cfg.study.directions,
        sweep_path=Path(sweep) if sweep else out / "runs_datasize.csv",
        cka_path=Path(cka) if cka else out / "cka.csv",
        diagnostics_path=Path(diag) if diag else out / "diagnostics.csv",
        recipe=config_mod.recipe(cfg),
        split_classes=_split_classes(cfg),
        reference_dir=REFERENCE if REFERENCE.is_dir() else None,
        dataset=(recorded_dataset(out) or {})
        | {"dissimilar_groups": list(cfg.split.dissimilar_groups)},
    )
    blocks = ", ".join(f"{v} {k}" for k, v in summary["blocks"].items())
    click.echo(f"{summary['networks']} networks, blocks: {blocks} → {out}/")
    _echo_summary(out)


REFERENCE = Path("report/reference")  # the original paper's numbers


def _split_classes(cfg) -> dict[str, dict[str, list[str]]]:
    """The class lists of the configured splits whose files exist (data/splits)."""
    from transferability.splits import Split, named_splits, split_path

    paths = [split_path(cfg, s.name) for s in named_splits(cfg)]
    splits = [Split.load(p) for p in paths if p.is_file()]
    return {s.name: {"A": list(s.A), "B": list(s.B)} for s in splits}


def _echo_summary(out: Path) -> None:
    import pandas as pd

    acc = pd.read_csv(out / "accuracy.csv")
    claims = pd.read_csv(out / "claims.csv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for kind, g in acc.groupby("split_kind"):
            click.echo(f"\n[{kind}] test accuracy (mean over {int(g['blocks'].max())} blocks)")
            click.echo(g.pivot(index="n", columns="treatment", values="mean").round(4).to_string())
        click.echo("\nclaims (accuracy points; intervals over blocks)")
        cols = [
            "claim",
            "estimate",
            "ci_low",
            "ci_high",
            "blocks",
            "delta",
            "verdict",
            "verdict_holm",
        ]
        click.echo(claims[cols].round(2).to_string(index=False))


@cli.command()
@with_params
@TRUST_ROWS
def study(cfg, trust_rows):
    """The whole study in one go: prepare, split, bases, transfers, analyze."""
    t = time.perf_counter()
    _write_splits(cfg, _prepare(cfg))
    _train(cfg, "all", None, trust_rows)
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
    import torch

    from transferability.bench import as_json, measured_seconds, run_bench, table
    from transferability.train import resolve_device

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ds = _dataset(cfg)
    splits = configured_splits(cfg, ds.classes)
    device = resolve_device(cfg.train.device)
    if study_mode:
        figures = _bench_study(cfg, ds, splits, images, rounds, device, profiles_path)
    else:
        measured = measured_seconds(Path(cfg.study.results_dir) / "runs.csv")
        b = run_bench(cfg, ds, splits, images, rounds, loader_workers, device, measured)
        click.echo(table(b))
        figures = as_json(b)
    if json_path:
        from transferability.io import write_json

        write_json(json_path, figures)
        click.echo(f"figures → {json_path}")


def _bench_study(cfg, ds, splits, images, rounds, device, profiles_path) -> dict:
    """`bench --study`: one block of the study timed, and each profile's cost at its rate."""
    import tempfile

    import yaml

    from transferability.bench import run_study_bench, study_json, study_table, study_work

    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        b = run_study_bench(cfg, ds, splits, Path(tmp), images, rounds, device, log=click.echo)
    params = click.get_current_context().params["params_path"]
    names = ["reference"]
    if Path(profiles_path).is_file():
        names += list(yaml.safe_load(Path(profiles_path).read_text()) or {})
    b.profiles = {}
    for name in names:
        over = [] if name == "reference" else config_mod.profile_overrides(name, profiles_path)
        p = config_mod.load(params, over)
        b.profiles[name] = study_work(p, ds, configured_splits(p, ds.classes))
    click.echo(study_table(b))
    return study_json(b)


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected integers separated by commas", param_hint=name
        ) from None


def _train_budgets(cfg, budgets, tasks: str, seeds: str, out: Path, selffer: bool):
    """Bases (and with `selffer` their top-cut selffers) of the first split at each budget not
    yet in `out`: the pilot's and the time-to-accuracy benchmark's runs."""
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

    from transferability.analysis import choose_budget
    from transferability.io import atomic_write
    from transferability.pilot import recipe_id

    budgets = [(p, e) for p in _ints(per_class, "--per-class") for e in _ints(epochs, "--epochs")]
    out = Path(out) if out else Path(cfg.study.results_dir) / "pilot.csv"
    rows = _train_budgets(cfg, budgets, tasks, seeds, out, selffer=True)
    # the rule reads this recipe's runs only (a pilot file may hold other recipes' too)
    rows = rows[rows.recipe == recipe_id(cfg)]
    table, choice = choose_budget(rows, cfg.analysis.converged_max_gain)
    with atomic_write(out.with_name(f"{out.stem}_budgets.csv")) as f:
        table.to_csv(f, index=False, float_format="%.4f")
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
    from transferability.analysis import time_to_level

    out = Path(out) if out else Path(cfg.study.results_dir) / "time_to_accuracy.csv"
    if no_train:
        if not out.is_file():
            raise click.BadParameter(f"{out}: no such runs file", param_hint="--out")
        rows = pd.read_csv(out)
    else:
        budgets = [(per_class, e) for e in _ints(epochs, "--epochs")]
        rows = _train_budgets(cfg, budgets, tasks, seeds, out, selffer=False)
    curve, summary = summarise(rows, margin)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        click.echo(curve.drop(columns=["recipe", "split"]).round(2).to_string(index=False))
        click.echo(summary.round(2).to_string(index=False))
        for q in summary[summary.reach != "none"].itertuples():
            what = "converged accuracy" if q.converged else "best so far (not converged)"
            click.echo(f"\nwithin {margin:g} points of {q.settings}'s {what}, {q.level:.2f}:")
            to = time_to_level(curve, q.level, margin).drop(columns=["recipe", "split"])
            click.echo(to.round(2).to_string(index=False))
    if plot:
        _plot_time_to_accuracy(curve, summary, margin, Path(plot))
        click.echo(f"plot → {plot}")


def _plot_time_to_accuracy(curve, summary, margin: float, path: Path) -> None:
    """Validation accuracy against image-epochs, one colour per recipe: the mean over runs
    (thick; the benchmark's criterion reads it) and each task's mean over seeds (thin), with
    the level the recipe must reach (converged − margin: dashed; a lower bound: dotted) and
    the budget that first reaches it ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferability.analysis import RECIPE_KEY

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    summary = summary.set_index(RECIPE_KEY)
    for (recipe, split, per_class), c in curve.groupby(RECIPE_KEY, sort=False):
        s = summary.loc[(recipe, split, per_class)]
        where = f"{split}, " if split else ""
        (line,) = ax.plot(
            c.image_epochs, c.val_acc, "o-", lw=2, label=f"{s.settings} ({where}{per_class}/class)"
        )
        colour = line.get_color()
        for col in [k for k in c.columns if k.startswith("val_") and k != "val_acc"]:
            ax.plot(c.image_epochs, c[col], ".-", lw=0.7, alpha=0.5, color=colour)
            ax.annotate(
                col[4:],
                (c.image_epochs.iloc[-1], c[col].iloc[-1]),
                color=colour,
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        if s.reach != "none":
            ax.axhline(s.level - margin, color=colour, ls="--" if s.converged else ":", lw=0.8)
            hit = c.val_acc[c.epochs == s.reach_epochs].iloc[0]
            ax.plot(s.reach_image_epochs, hit, "o", ms=12, mfc="none", color=colour)
    ax.set_xscale("log", base=2)
    ticks = sorted(set(curve.image_epochs))
    ax.set_xticks(ticks, [f"{t / 1000:g}k" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("image-epochs (training images × epochs)")
    ax.set_ylabel("validation accuracy (%): mean of tasks × seeds;\nthin: each task")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


@cli.command()
@with_params
@click.argument("networks", nargs=-1)
@click.option("--runs", default=None, help="Committed results [default: <results_dir>/runs.csv].")
def reproduce(cfg, networks, runs):
    """Retrain a sample of the committed networks and compare (default: the first block's baseB,
    B1B+ and B(top)B): identical on the same kind of machine, within
    analysis.reproduce_tolerance points on another."""
    import tempfile

    from transferability.runner import default_sample
    from transferability.runner import reproduce as rerun
    from transferability.study import plan

    ds = _dataset(cfg)
    splits = load_splits(cfg, ds.classes)
    sample = list(networks) or default_sample(plan(cfg, splits))
    with tempfile.TemporaryDirectory() as tmp:
        rows = rerun(
            cfg,
            splits,
            ds,
            _runs_path(cfg, runs),
            sample,
            Path(tmp),
            cfg.analysis.reproduce_tolerance,
            log=click.echo,
        )
    failed = [r["network"] for r in rows if r["verdict"].startswith("FAIL")]
    if failed:
        raise RuntimeError(f"not reproduced: {', '.join(failed)}")
    click.echo(f"reproduced {len(rows)} networks")


@cli.command()
@click.argument("name")
@click.option("--file", "path", default="profiles.yaml", show_default=True)
def profile(name, path):
    """Print the `dvc exp run` flags (-S key=value ...) of a named profile."""
    import shlex

    click.echo(" ".join(f"-S {shlex.quote(s)}" for s in config_mod.profile_overrides(name, path)))


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
