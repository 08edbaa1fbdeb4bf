"""Check a finished `dvc exp run --temp` experiment from what it committed (CI).

python .ci/check_experiment.py EXPERIMENT_NAME PROFILE

Its results tables are committed in the experiment's git ref and its PDF and executed notebook
are in the DVC cache: every planned network has one row and one MLflow run, bases beat twice
chance (quick profile), the claims table exists, and the report stage produced both files.
"""

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from transferability import config
from transferability.networks import plan
from transferability.splits import named_splits
from transferability.tracking.store import EXPERIMENT, tracking_uri


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def main(name: str, profile: str) -> None:
    refs = [
        r
        for r in git("for-each-ref", "--format=%(refname)", "refs/exps").split()
        if r.endswith(f"/{name}")
    ]
    assert refs, f"no experiment named {name}"
    ref = refs[-1]
    params = yaml.safe_load(git("show", f"{ref}:params.yaml"))
    cfg = config.validate(params, "experiment params")
    expected = sorted(j.network for j in plan(cfg, named_splits(cfg)))
    runs = pd.read_csv(io.StringIO(git("show", f"{ref}:{cfg.study.results_dir}/runs.csv")))
    assert sorted(runs.network) == expected, f"rows != planned networks ({len(runs)} rows)"
    claims = pd.read_csv(io.StringIO(git("show", f"{ref}:{cfg.study.results_dir}/claims.csv")))
    print(claims[["claim", "estimate", "blocks", "verdict"]].to_string(index=False))
    if profile == "quick":
        bases = runs[runs.treatment == "base"]
        print(bases[["network", "val_acc", "test_acc", "num_classes"]].to_string(index=False))
        assert (bases.test_acc >= 2 / bases.num_classes).all(), "a base is below twice chance"
        assert (claims.verdict == "not testable").all(), "a one-block demo gave a verdict"
    lock = yaml.safe_load(git("show", f"{ref}:dvc.lock"))
    for out in lock["stages"]["report"]["outs"]:
        if out["path"].startswith("report/build/"):
            md5 = out["md5"]
            assert Path(".dvc/cache/files/md5", md5[:2], md5[2:]).is_file(), out["path"]
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(EXPERIMENT)
    logged = {
        r.data.tags.get("network")
        for r in client.search_runs([exp.experiment_id], max_results=50000)
        if r.data.tags.get("role") != "study"
    }
    assert set(expected) <= logged, f"{len(set(expected) - logged)} networks have no MLflow run"
    print(f"{name}: {len(runs)} networks, one row and one MLflow run each; PDF and notebook cached")


if __name__ == "__main__":
    main(*sys.argv[1:])
