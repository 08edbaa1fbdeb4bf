"""`transferability ui` (`make ui`): MLflow's UI, opened on the study's runs table.

MLflow's UI opens on its GenAI home page and remembers the last workflow in the browser, so
the link goes straight to the experiment's runs in the model-training workflow, with the view
the store shares (`store.RUNS_VIEW`: the key columns). A study's networks are under its parent
run (the row's + opens them): MLflow does not share which rows are open."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import webbrowser
from collections.abc import Callable
from pathlib import Path

from transferability.tracking.store import EXPERIMENT, RUNS_VIEW, sqlite_file, tracking_uri


def runs_link(base: str, uri: str | None = None) -> str:
    """The URL of the study's runs table under `base` (http://host:port), or of the UI's
    experiments list while the store holds no study yet."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    db = sqlite_file(uri)
    exp = (
        MlflowClient(uri).get_experiment_by_name(EXPERIMENT) if db is None or db.is_file() else None
    )
    if exp is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return (
        f"{base}/#/experiments/{exp.experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW}"
    )


def wait_until_up(url: str, timeout_s: float = 120.0, server=None) -> None:
    """Return once `url` answers; raise if the server exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the MLflow UI exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the MLflow UI did not answer at {url} within {timeout_s:.0f} s")


def serve(host: str, port: int, open_browser: bool, log: Callable[[str], None] = print) -> int:
    """Run `mlflow ui` on the study's store, print (and open) the runs table's link, and wait
    for the server; returns its exit status."""
    uri = tracking_uri().partition("?")[0]  # the store, without the client's lock timeout
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    server = subprocess.Popen(cmd)
    try:
        base = f"http://{host}:{port}"
        wait_until_up(f"{base}/health", server=server)
        link = runs_link(base, uri)
        log(f"the study's runs: {link}")
        if open_browser:
            webbrowser.open(link)  # no browser (a server, CI): the link above is all
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
