"""The DVC pipeline on tiny data: every stage runs; a parameter re-runs only what reads it."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from transferability import config

from .factories import make_image_folder, pipeline_module

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")

pytestmark = pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed beside python")


def dvc(repo, *args):
    env = {**os.environ, "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [str(DVC), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    # the reference's pipeline alone (a second study's, pipelines/<name>/, has a test of its own)
    shutil.copytree(
        ROOT / "pipelines",
        repo / "pipelines",
        ignore=lambda d, names: [n for n in names if (Path(d) / n / "dvc.yaml").exists()],
    )
    shutil.copytree(ROOT / "report" / "reference", repo / "report" / "reference")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    make_image_folder(tmp_path / "images", n_train=6, n_test=3)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"] |= {
        "source": str(tmp_path / "images"),
        "train_per_class": None,
        "val_per_class": 1,
    }
    params["model"]["width"] = 0.25
    params["train"] |= {"epochs": 1, "batch_size": 16, "progress": False}
    params["study"]["cuts"] = [1]
    params["split"] |= {"random_seeds": [0], "dissimilar": False}  # one block tests the stages
    params["beyond"] |= {
        "datasize_per_class": [2],
        "datasize_cuts": [1],
        "cka_images": 20,
        "diagnostics": ["interpolation", "reinit"],  # the two that train nothing
        "interpolation_points": 3,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


def test_repro_runs_every_stage_and_a_transfer_param_reruns_only_transfer(repo):
    dvc(repo, "repro", "aggregate")  # the report stage has a test of its own (it needs TeX)
    runs = pd.read_csv(repo / "results/runs.csv")
    assert len(runs) == 2 + 2 * 5
    assert len(pd.read_csv(repo / "results/runs_datasize.csv")) == 2 + 2 * 2  # beyond the paper
    assert len(pd.read_csv(repo / "results/cka.csv")) == 5 + 2 * 2 * 5
    diag = pd.read_csv(repo / "results/diagnostics.csv")
    assert set(diag.diagnostic) == {"interpolation", "reinit"}
    assert (
        "n1"
        in json.loads((repo / "results/summary.json").read_text())["gaps"]["random"]["specificity"]
    )
    assert set(json.loads(dvc(repo, "status", "--json"))) <= {"report"}
    assert "gaps.random.specificity.n1" in dvc(repo, "metrics", "show")

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"]["cuts"] = [1, 2]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert set(json.loads(dvc(repo, "status", "--json"))) - {"report"} == {
        "transfer",
        "similarity",
        "diagnostics",
    }

    # what `dvc repro` would run: those three and nothing upstream (a dry run judges each stage
    # by the files as they are, so aggregate, whose inputs they rewrite, reads unchanged here)
    dry = dvc(repo, "repro", "--dry", "aggregate")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    ran = {s for s in stages if f"Running stage '{s}'" in dry}
    assert ran == {"transfer", "similarity", "diagnostics"}, dry


@pytest.mark.parametrize(
    "name", sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/dvc.yaml"))
)
def test_every_second_study_is_derived_from_the_reference_and_fresh(name):
    """pipelines/<name>/{params,dvc}.yaml are params.yaml + profiles.yaml's profile and the
    reference's per-study stages, reading that params file: never edited by hand."""
    for path, text in pipeline_module("derive").derive(name).items():
        assert path.read_text() == text, f"{path} is stale: python pipelines/derive.py {name}"
    study = config.load(ROOT / f"pipelines/{name}/params.yaml").study
    assert (study.results_dir, study.models_dir) == (f"results/{name}", f"models/{name}")


def test_the_whole_task_studys_pipeline_is_derived_from_the_reference():
    stages = yaml.safe_load((ROOT / "pipelines/whole/dvc.yaml").read_text())["stages"]
    reference = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["cmd"].startswith("TRANSFERABILITY_PARAMS=pipelines/whole/params.yaml ")
        assert stage["deps"] == reference[name]["deps"]
        assert stage["params"] == [{"pipelines/whole/params.yaml": reference[name]["params"]}]
    whole = config.load(ROOT / "pipelines/whole/params.yaml")
    assert (whole.study.results_dir, whole.study.models_dir) == ("results/whole", "models/whole")
    assert whole.data.train_per_class is None  # the whole task
    ref = config.load(ROOT / "params.yaml")
    # the reference's prepare and split stages serve both studies
    assert (whole.data.source, whole.data.prepared, whole.data.image_size, whole.split.dir) == (
        ref.data.source,
        ref.data.prepared,
        ref.data.image_size,
        ref.split.dir,
    )
    assert set(whole.split.random_seeds) <= set(ref.split.random_seeds)


# modules a stage runs that cannot change what it writes: MLflow logging (a run's record, never
# a row or a checkpoint), where another dataset's files go (place), the command line (it parses
# and calls: the stage's cmd fixes the call) and the package's entry points
NOT_OUTPUTS = {"tracking", "place", "cli", "__init__", "__main__"}


def stage_modules(script: Path) -> set[str]:
    """The package modules a pipeline script's command runs: the `cli` command it calls (and the
    cli helpers that command calls), then every module those import, at the top or inside a
    function, to the end of the chain (a subpackage counts as one module)."""
    import ast

    from .factories import package_imports

    package = ROOT / "src" / "transferability"
    tree = ast.parse(script.read_text())
    calls = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "main"
    ]
    command = calls[0].args[0].elts[0].value  # main(["train-bases", ...])
    cli = ast.parse((package / "cli.py").read_text())
    funcs = {f.name: f for f in cli.body if isinstance(f, ast.FunctionDef)}

    def named(f):
        for d in f.decorator_list:
            if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" and d.args:
                return d.args[0].value
        return f.name.replace("_", "-")

    todo = [next(f for f in funcs.values() if named(f) == command)]
    seen, modules = (
        set(),
        package_imports(
            "\n".join(ast.unparse(s) for s in cli.body if not isinstance(s, ast.FunctionDef))
        ),
    )
    while todo:
        f = todo.pop()
        if f.name in seen:
            continue
        seen.add(f.name)
        modules |= package_imports(ast.unparse(f))
        todo += [funcs[n.id] for n in ast.walk(f) if isinstance(n, ast.Name) and n.id in funcs]
    closure = set()
    while modules - closure:
        m = (modules - closure).pop()
        closure.add(m)
        path = package / f"{m}.py"
        files = [path] if path.is_file() else sorted((package / m).glob("*.py"))
        for p in files:
            modules |= package_imports(p.read_text())
    return closure


@pytest.mark.parametrize(
    "stage", ["prepare", "split", "train_base", "transfer", "datasize", "similarity", "aggregate"]
)
def test_every_stage_depends_on_the_code_it_runs(stage):
    """A change to any module a stage's command runs re-runs the stage (the modules that only
    log or place files, NOT_OUTPUTS, aside)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    script = ROOT / shlex.split(spec["cmd"])[1]
    deps = set(spec["deps"])
    missing = {
        m
        for m in stage_modules(script) - NOT_OUTPUTS
        if f"src/transferability/{m}.py" not in deps and f"src/transferability/{m}" not in deps
    }
    assert not missing, f"dvc.yaml stage {stage} runs {sorted(missing)} but does not list them"


def test_the_stage_dependency_check_sees_a_missing_module():
    modules = stage_modules(ROOT / "pipelines" / "train_base.py")
    assert {"data", "config", "splits", "executors", "networks", "train", "models"} <= modules
