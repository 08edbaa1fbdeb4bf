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


def test_repro_service_mounts_the_repo_uses_every_gpu_and_runs_the_pipeline():
    repro = compose()["repro"]
    assert "..:/work" in repro["volumes"] and repro["working_dir"] == "/work"
    devices = repro["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["count"] == "all" and devices["capabilities"] == ["gpu"]
    assert repro["command"] == ["make", "repro-in-container"]
    assert repro["environment"]["PROFILE"] == "${PROFILE:-quick}"
    assert "/work/mlflow.db" in repro["environment"]["MLFLOW_TRACKING_URI"]


def test_mlflow_service_serves_the_same_store_on_localhost_only():
    mlflow = compose()["mlflow"]
    assert mlflow["ports"] == ["127.0.0.1:5000:5000"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    assert command[command.index("--backend-store-uri") + 1] == "sqlite:////work/mlflow.db"
    assert "..:/work" in mlflow["volumes"]


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
    assert any(s.get("run") == "bash .ci/run" for s in steps)
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
