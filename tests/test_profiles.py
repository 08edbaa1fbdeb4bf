"""params.yaml is the one source of settings; profiles override only keys it has."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transferability import config

from .factories import make_repro_dry, shell_words

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
PROFILES = ["reference", *yaml.safe_load((ROOT / "profiles.yaml").read_text())]
# a profile with a pipeline of its own (pipelines/<name>/) runs that, not `dvc exp run`
EXP_PROFILES = [p for p in PROFILES if not (ROOT / "pipelines" / p / "dvc.yaml").exists()]


def test_the_code_defaults_are_params_yaml():
    """No third profile hides in config.py: its defaults are params.yaml's values."""
    params = config.load(ROOT / "params.yaml").model_dump()
    defaults = config.Config().model_dump()
    params["data"].pop("source"), defaults["data"].pop("source")  # where this machine's copy is
    # the second studies whose committed results this repository's report draws: a project
    # folder of one's own has none (the report stage would refuse a study it does not have)
    params["report"].pop("beside"), defaults["report"].pop("beside")
    assert defaults == params


def test_params_yaml_names_every_setting():
    """`dvc exp run -S` overrides only keys that params.yaml has: it must have them all."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, model in config.Config.model_fields.items():
        assert set(model.annotation.model_fields) == set(raw[section]), section


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_key_exists_in_params_yaml(name):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in config.profile_overrides(name, ROOT / "profiles.yaml"):
        section, key = item.split("=", 1)[0].split(".")
        assert key in raw[section], item
    config.load(ROOT / "params.yaml", config.profile_overrides(name, ROOT / "profiles.yaml"))


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed beside python")
def test_every_profiles_command_passes_dvc_exp_run_dry(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", "profiles.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("pipelines", "src", "report"):
        shutil.copytree(
            ROOT / name, repo / name, ignore=shutil.ignore_patterns("*.egg-info", "build")
        )
    env = {**os.environ, "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(*args):
        out = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
        return out.stdout

    run("git", "init", "-q")
    run(str(DVC), "init", "-q")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    for name in EXP_PROFILES:
        flags = [
            a for o in config.profile_overrides(name, repo / "profiles.yaml") for a in ("-S", o)
        ]
        # --single-item: a dry run of later stages would need the earlier stages' outputs; the
        # -S flags (what failed before) are all applied and checked either way
        run(str(DVC), "exp", "run", "--dry", "--single-item", "prepare", *flags)
        run("git", "checkout", "-q", "--", ".")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_repro_with_data_rewrites_no_tracked_file():
    """`make repro DATA=...` runs the reference as an experiment (-S data.source=...) rather
    than editing params.yaml; without DATA it is `dvc repro`."""

    dry = make_repro_dry

    with_data = dry("DATA=/somewhere/cifar10")
    assert "dvc exp run --temp --name reference" in with_data
    # the words the shell hands dvc (the path is quoted for it and for Hydra)
    cmd = with_data[with_data.index("exp run") :]
    words = shell_words(cmd)
    assert words[-2:] == ["-S", "data.source='/somewhere/cifar10'"], words
    assert dry().endswith("dvc repro")
    makefile = (ROOT / "Makefile").read_text()
    assert "params.yaml" not in "".join(ln for ln in makefile.splitlines() if "sed" in ln)
