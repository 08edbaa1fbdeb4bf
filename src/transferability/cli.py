"""The `transferability` command: one subcommand per step of the study."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import click

from transferability import config as config_mod
from transferability import data as data_mod
from transferability.splits import Split, make_splits


def with_params(fn):
    """Add --params and --set to a command and hand it the validated Config as `cfg`."""

    @click.option(
        "--params",
        "params_path",
        default="params.yaml",
        show_default=True,
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
        cfg = config_mod.load(params_path, list(overrides))
        return fn(cfg=cfg, **kwargs)

    return wrapper


def split_path(cfg: config_mod.Config, name: str) -> Path:
    return Path(cfg.split.dir) / f"{name}.json"


def configured_splits(cfg: config_mod.Config, classes: list[str]) -> list[Split]:
    return make_splits(classes, cfg.split.random_seeds, cfg.split.dissimilar, cfg.split.custom)


def load_splits(cfg: config_mod.Config, classes: list[str]) -> list[Split]:
    """The split files written by `transferability split`, checked against the dataset."""
    out = []
    for expected in configured_splits(cfg, classes):
        path = split_path(cfg, expected.name)
        if not path.is_file():
            raise FileNotFoundError(f"split file not found: {path} (run `transferability split`)")
        split = Split.load(path)
        split.validate(classes)
        out.append(split)
    return out


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
    )
    return ds


@cli.command()
@with_params
def split(cfg):
    """Write the A/B class lists of every configured split (split.dir)."""
    _write_splits(cfg, _dataset(cfg))


def _write_splits(cfg, ds: data_mod.Dataset) -> None:
    for s in configured_splits(cfg, ds.classes):
        s.save(split_path(cfg, s.name))
        click.echo(f"{split_path(cfg, s.name)}: A={list(s.A)} B={list(s.B)}")


def _train(cfg, which: str, runs: str | None):
    from transferability.study import run_study

    ds = _dataset(cfg)
    splits = load_splits(cfg, ds.classes)
    runs_path = Path(runs) if runs else Path(cfg.study.results_dir) / "runs.csv"
    t = time.perf_counter()
    rows = run_study(cfg, splits, ds, runs_path, which=which)
    click.echo(f"{len(rows)} networks in {runs_path} ({time.perf_counter() - t:.0f}s this run)")


RUNS_OPTION = click.option(
    "--runs", default=None, help="Results table to append to [default: <results_dir>/runs.csv]."
)


@cli.command("train-bases")
@with_params
@RUNS_OPTION
def train_bases(cfg, runs):
    """Train baseA and baseB of every split and seed."""
    _train(cfg, "bases", runs)


@cli.command()
@with_params
@RUNS_OPTION
def transfer(cfg, runs):
    """Train every transfer network (BnB, BnB+, AnB, AnB+, RnB at every cut)."""
    _train(cfg, "transfers", runs)


@cli.command()
@with_params
@click.option(
    "--runs",
    "runs",
    multiple=True,
    help="Results tables to read (several are merged into <results_dir>/runs.csv) "
    "[default: <results_dir>/runs.csv].",
)
def analyze(cfg, runs):
    """Per-cut accuracies, gaps and Table 1 → accuracy.csv, gaps.csv, summary.json."""
    _analyze(cfg, runs)


def _analyze(cfg, runs) -> None:
    from transferability.analysis import analyse
    from transferability.models import num_layers
    from transferability.study import read_runs, write_runs

    out = Path(cfg.study.results_dir)
    merged = out / "runs.csv"
    if runs and [Path(r) for r in runs] != [merged]:
        missing = [r for r in runs if not Path(r).is_file()]
        if missing:
            raise FileNotFoundError(f"results table not found: {', '.join(missing)}")
        write_runs(merged, [row for r in runs for row in read_runs(Path(r))])
    summary = analyse(merged, out, num_layers(cfg.model.arch))
    click.echo(f"{summary['networks']} networks, {summary['units']} units → {out}/")
    _echo_summary(out)


def _echo_summary(out: Path) -> None:
    import pandas as pd

    acc = pd.read_csv(out / "accuracy.csv")
    gaps = pd.read_csv(out / "gaps.csv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for kind, g in acc.groupby("split_kind"):
            click.echo(f"\n[{kind}] test accuracy (mean over {int(g['count'].max())} units)")
            click.echo(g.pivot(index="n", columns="treatment", values="mean").round(4).to_string())
        for kind, g in gaps.groupby("split_kind"):
            click.echo(f"\n[{kind}] gaps (mean)")
            click.echo(g.pivot(index="n", columns="gap", values="mean").round(4).to_string())


@cli.command()
@with_params
def study(cfg):
    """The whole study in one go: prepare, split, bases, transfers, analyze."""
    t = time.perf_counter()
    _write_splits(cfg, _prepare(cfg))
    _train(cfg, "all", None)
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
def bench(cfg, images, rounds, loader_workers, json_path):
    """Training images/s: DataLoader pipeline vs the project's path vs the compute bound."""
    import torch

    from transferability.bench import as_json, measured_seconds, run_bench, table
    from transferability.train import resolve_device

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ds = _dataset(cfg)
    splits = configured_splits(cfg, ds.classes)
    measured = measured_seconds(Path(cfg.study.results_dir) / "runs.csv")
    b = run_bench(cfg, ds, splits, images, rounds, loader_workers,
                  resolve_device(cfg.train.device), measured)  # fmt: skip
    click.echo(table(b))
    if json_path:
        from transferability.io import write_json

        write_json(json_path, as_json(b))
        click.echo(f"figures → {json_path}")


def main(args: list[str] | None = None) -> None:
    try:
        cli.main(args, standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except (ValueError, FileNotFoundError, RuntimeError, config_mod.ConfigError) as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        click.echo("interrupted: finished networks are saved; run again to resume", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
