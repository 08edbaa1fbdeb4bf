"""The container, its compose file and the workflows, checked statically (no Docker engine here)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose():
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]


def pinned(name):
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(rf'"{name}==([^"]+)"', text).group(1)


def mounted_repo(service: dict) -> Path:
    """The folder of this machine a service mounts at its working directory (compose resolves
    a relative source against the compose file's folder)."""
    for volume in service["volumes"]:
        source, _, target = volume.partition(":")
        if target == service["working_dir"]:
            return (ROOT / "docker" / source).resolve()
    raise AssertionError(f"nothing is mounted at {service['working_dir']}")


def store_file(uri: str, service: dict) -> Path:
    """The file on this machine that a sqlite:/// URI inside a service names."""
    inside = Path(uri.removeprefix("sqlite:///").partition("?")[0])
    return mounted_repo(service) / inside.relative_to(service["working_dir"])


def test_repro_service_runs_a_make_target_of_this_repo_on_every_gpu():
    repro = compose()["repro"]
    assert mounted_repo(repro) == ROOT
    devices = repro["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["count"] == "all" and devices["capabilities"] == ["gpu"]
    program, target = repro["command"]
    dry = subprocess.run([program, "-n", target], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr  # a target the Makefile has
    profile = repro["environment"]["PROFILE"].removeprefix("${PROFILE:-").removesuffix("}")
    assert profile in yaml.safe_load((ROOT / "profiles.yaml").read_text())


def test_the_ui_serves_the_store_the_pipeline_logs_to_on_localhost_only():
    repro, mlflow = compose()["repro"], compose()["mlflow"]
    logged = store_file(repro["environment"]["MLFLOW_TRACKING_URI"], repro)
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    served = store_file(command[command.index("--backend-store-uri") + 1], mlflow)
    assert served == logged == ROOT / "mlflow.db"  # the repository's store, as outside
    assert all(p.startswith("127.0.0.1:") for p in mlflow["ports"])


def test_dockerfile_pins_the_projects_torch_and_runs_as_a_user():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG TORCH={pinned('torch')}" in text
    assert f"ARG TORCHVISION={pinned('torchvision')}" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "latexmk" in text  # the report's PDF builds inside the image


def test_workflow_runs_the_same_script_as_ci_and_uploads_the_pdf():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = wf["jobs"]["test-and-report"]["steps"]
    runs = [s["run"].split() for s in steps if s.get("run", "").startswith("bash ")]
    assert ["bash", ".ci/run"] in runs and (ROOT / ".ci" / "run").is_file()
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "report/build/paper.pdf" in upload["with"]["path"]
    assert wf["jobs"]["image"]["if"].startswith("startsWith(github.ref, 'refs/tags/')")


@pytest.mark.skipif(
    shutil.which("hadolint") is None and not (ROOT / ".venv/bin/hadolint").exists(),
    reason="hadolint not installed",
)
def test_hadolint_passes():
    exe = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    out = subprocess.run([exe, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
