"""Write a second study's pipeline, pipelines/<name>/{params,dvc}.yaml, from the reference's.

python pipelines/derive.py NAME

A study other than the reference (params.yaml, dvc.yaml, results/, models/) is the reference's
settings with the overrides of profiles.yaml's profile NAME, run by the reference's stages.
Its folder holds both as files that DVC reads: `params.yaml` (every setting, so that DVC tracks
each one the stages list) and `dvc.yaml` (the reference's per-study stages, run from the
repository root, reading that params file), so that it has its own `dvc.lock` beside them and
`dvc repro pipelines/NAME/dvc.yaml` rebuilds it alone, while `dvc repro` rebuilds the reference.
Both files are derived: edit params.yaml, profiles.yaml or dvc.yaml and run this again (a test
fails while they are stale). The split and its prepared images are the reference's (its
`prepare` and `split` stages); the report stage is the reference's alone (it is not derived).
"""

import sys
from pathlib import Path

import yaml

from transferability import config

ROOT = Path(__file__).resolve().parents[1]
STAGES = (
    "train_base",
    "transfer",
    "datasize",
    "similarity",
    "diagnostics",
    "aggregate",
)  # one per study
HEADER = (
    "# DERIVED by `python pipelines/derive.py {name}` from params.yaml, dvc.yaml and\n"
    "# profiles.yaml's profile `{name}`: edit those and run it again (a test checks this file).\n"
)


def settings(name: str, root: Path = ROOT) -> dict:
    """Every setting of study `name`: params.yaml with the profile's overrides, validated."""
    overrides = config.profile_overrides(name, root / "profiles.yaml")
    cfg = config.load(root / "params.yaml", overrides)  # a bad override names itself here
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in config.parse_overrides(overrides).items():
        raw[section].update(values)  # a profile overrides keys of params.yaml's sections
    assert config.validate(raw, "derived", set()) == cfg
    raw.pop("report", None)  # the report stage, and the studies it draws, are the reference's
    return raw


def stages(name: str, root: Path = ROOT) -> dict:
    """The reference's per-study stages, run from the root with pipelines/<name>/params.yaml."""
    params = f"pipelines/{name}/params.yaml"
    reference = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for stage in STAGES:
        s = dict(reference[stage])
        out[stage] = {
            "wdir": "../..",
            "cmd": f"TRANSFERABILITY_PARAMS={params} {s.pop('cmd')}",
            **{k: v for k, v in s.items() if k != "params"},
            "params": [{params: s["params"]}],
        }
    models = settings(name, root)["study"]["models_dir"]
    bases = yaml.safe_load((root / "dvc.yaml").read_text())["artifacts"]["bases"]
    artifacts = {  # relative to this dvc.yaml's folder, as DVC reads an artifact's path
        "bases": bases
        | {
            "path": f"../../{models}/bases",
            "desc": bases["desc"].replace("the reference study", f"the {name} study"),
            "labels": [name if x == "reference" else x for x in bases["labels"]],
        }
    }
    return {"stages": out, "artifacts": artifacts}


def derive(name: str, root: Path = ROOT) -> dict[Path, str]:
    """The two files of study `name` and their text."""
    if name == "reference":
        raise ValueError("the reference study is params.yaml and dvc.yaml themselves")
    folder = root / "pipelines" / name
    head = HEADER.format(name=name)
    dump = dict(sort_keys=False, width=100, allow_unicode=True)
    return {
        folder / "params.yaml": head + yaml.safe_dump(settings(name, root), **dump),
        folder / "dvc.yaml": head + yaml.safe_dump(stages(name, root), **dump),
    }


if __name__ == "__main__":
    for path, text in derive(sys.argv[1]).items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
