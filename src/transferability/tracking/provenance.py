"""Where a run came from: the repository and its commit, the DVC experiment and stage, and
the prepared data set.

Every run carries MLflow's source tags (``mlflow.source.git.commit``, the UI's "Version"), the
DVC experiment and stage it ran in (``dvc.experiment``, ``dvc.stage``, from the DVC_EXP_NAME and
DVC_STAGE that DVC gives stage commands), and the prepared data set as an input whose digest is
its md5 (the UI's "Dataset"). Paths are named relative to the repository root, which is found
even when DVC runs a stage in a temporary copy of the repository.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from contextlib import suppress
from functools import cache
from pathlib import Path


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder with dvc.yaml or .git above `start`.

    ``dvc exp run --temp`` runs stages in a copy under <root>/.dvc/tmp/exps/...; the store then
    still belongs to the real root, so that copy is stepped out of.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    if ".dvc" in parts:
        here = Path(*parts[: parts.index(".dvc")])
    return nearest_root(here) or here


def nearest_root(folder: Path) -> Path | None:
    """The nearest folder at or above `folder` that holds dvc.yaml or .git (a repository or a
    DVC temporary copy of one), if any: the one rule of `repo_root` and `repo_path`."""
    for p in (folder, *folder.parents):
        if (p / "dvc.yaml").is_file() or (p / ".git").exists():
            return p
    return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@cache
def git_commit() -> str:
    return _git("rev-parse", "HEAD")


def repo_path(path: str | os.PathLike) -> str:
    """`path` relative to the root of the repository (or DVC temp copy) that holds it, else
    absolute: what a source or a file is called whichever copy of the repository ran."""
    p = Path(path).resolve()
    base = nearest_root(p.parent)
    return p.relative_to(base).as_posix() if base else p.as_posix()


@cache
def source_tags() -> dict[str, str]:
    """MLflow's system tags of a run's source, as `mlflow.start_run` sets them, and the DVC
    experiment and stage (DVC sets DVC_EXP_NAME for `dvc exp run`, DVC_STAGE for every stage).
    The commit is the UI's "Version"; git.dirty says whether the work tree differed from it."""
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_BRANCH,
        MLFLOW_GIT_COMMIT,
        MLFLOW_GIT_DIRTY,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    main = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    tags = {
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_SOURCE_NAME: repo_path(main) if main and main.is_file() else "python",
    }
    with suppress(KeyError, OSError):  # a container user without a passwd entry has none
        tags[MLFLOW_USER] = getpass.getuser()
    if commit := git_commit():
        tags[MLFLOW_GIT_COMMIT] = commit
        branch = _git("rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":
            tags[MLFLOW_GIT_BRANCH] = branch
        tags[MLFLOW_GIT_DIRTY] = str(bool(_git("status", "--porcelain", "-uno"))).lower()
    for tag, var in (("dvc.experiment", "DVC_EXP_NAME"), ("dvc.stage", "DVC_STAGE")):
        if os.environ.get(var):
            tags[tag] = os.environ[var]
    return tags


def dataset_input(data_file: Path, md5: str, name: str, context: str = "training"):
    """The prepared data set as an MLflow dataset input named `name` (e.g. "CIFAR-10
    prepared"): DVC's md5 as its digest, its path (in the real repository, not a DVC temp
    copy) as its source."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    where = repo_path(data_file)
    if not Path(where).is_absolute():
        where = (repo_root(Path(data_file).resolve().parent) / where).as_posix()
    ds = MetaDataset(LocalArtifactDatasetSource(where), name=name, digest=md5)
    # mlflow.log_input's own conversion, for a run that is not the fluent API's active run
    return DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
