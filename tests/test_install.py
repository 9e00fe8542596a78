"""rackwatch installed as a rack gets it: a wheel in a fresh virtual environment, no project folder around it.

The other tests run rackwatch from the checkout (``pip install -e .``), where ``models/`` and ``../shared`` are
at hand. Here the wheel is built, installed into a plain venv (its dependencies from the package index), and
used as a user would: fetch and verify the model, analyse a real recording.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import real_parts
from rackwatch import models, paths

CLIP = real_parts.FOOTAGE / "calimiro_workouttracker" / "squat_19.mp4"   # 2 clean reps
SHARED_MODELS = real_parts.PROJECT.parent / "shared" / "models"


def shared_models() -> Path:
    """The folder holding a copy of the pose model (``../shared/models``), as CI's machines have it."""
    entry = models.manifest()
    return real_parts.require(SHARED_MODELS if (SHARED_MODELS / entry["file"]).is_file() else None,
                              f"no pose model to install from at {SHARED_MODELS / entry['file']}",
                              "put the shared models at ../shared/models beside the project")


# -- where an installed rackwatch keeps its model -------------------------------------------------------------------

def test_the_manifest_ships_in_the_package_and_models_manifest_json_is_the_same(monkeypatch):
    shipped = json.loads((resources.files("rackwatch") / "model_manifest.json").read_text())
    assert json.loads((real_parts.PROJECT / "models" / "manifest.json").read_text()) == shipped
    assert models.manifest() == shipped[models.DEFAULT_MODEL]


def test_in_a_checkout_the_model_lives_in_models(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert paths.CHECKOUT == real_parts.PROJECT
    assert paths.fetch_dir() == real_parts.PROJECT / "models"
    assert paths.model_dirs() == [real_parts.PROJECT / "models", tmp_path / "rackwatch" / "models",
                                  Path("/var/lib/rackwatch/models")]


def test_installed_the_model_is_fetched_into_the_data_folder_and_found_there(monkeypatch, tmp_path):
    source = shared_models()
    monkeypatch.setattr(paths, "CHECKOUT", None)   # as from a wheel
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("RACKWATCH_MODEL", raising=False)
    folder = tmp_path / "data" / "rackwatch" / "models"
    assert paths.model_dirs() == [folder, Path("/var/lib/rackwatch/models")]

    with pytest.raises(models.ModelError, match=f"looked for in {folder}, /var/lib/rackwatch/models"):
        models.find_model()
    fetched = models.fetch(source)
    assert fetched == folder / models.manifest()["file"] and fetched.is_file()
    assert models.find_model() == fetched


def test_installed_as_root_the_model_goes_where_the_service_reads_it(monkeypatch):
    monkeypatch.setattr(paths, "CHECKOUT", None)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.fetch_dir() == Path("/var/lib/rackwatch/models")   # systemd's StateDirectory=rackwatch
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert paths.fetch_dir() == Path.home() / ".local" / "share" / "rackwatch" / "models"


def test_a_model_folder_that_cannot_be_written_is_explained(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(paths, "fetch_dir", lambda: blocker / "models")
    with pytest.raises(models.ModelError, match=f"Cannot write the model into {blocker / 'models'}"):
        models.fetch(tmp_path)


# -- the wheel, installed ------------------------------------------------------------------------------------------

@pytest.mark.install
@pytest.mark.footage
def test_a_wheel_installed_in_a_fresh_venv_fetches_verifies_and_analyses(tmp_path):
    source = shared_models()
    # Build from a copy of what git holds, so nothing the checkout built (egg-info, build/) leaks in.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(real_parts.PROJECT / "edge", src / "edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(real_parts.PROJECT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(tmp_path / "dist")],
        cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("rackwatch-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)

    # The user's shell: no checkout, no source tree on the path, the model not fetched yet.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RACKWATCH_MODEL", "RACKWATCH_FOOTAGE")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    rackwatch = str(venv / "bin" / "rackwatch")

    installed = run([str(venv / "bin" / "python"), "-c", "from rackwatch import paths; print(paths.CHECKOUT)"],
                    cwd=tmp_path, env=env)
    assert installed.stdout.strip() == "None", "the wheel's rackwatch thinks it runs from a checkout"

    before = run([rackwatch, "models", "verify"], cwd=tmp_path, env=env, check=False)
    assert before.returncode == 2 and "rackwatch models fetch" in before.stderr, before.stderr
    model = tmp_path / "data" / "rackwatch" / "models" / models.manifest()["file"]
    fetched = run([rackwatch, "models", "fetch", "--from", str(source)], cwd=tmp_path, env=env)
    assert f"Model ready: {model}" in fetched.stdout
    assert f"Model OK: {model}" in run([rackwatch, "models", "verify"], cwd=tmp_path, env=env).stdout

    analysed = run([rackwatch, "analyze", str(CLIP), "--quiet"], cwd=tmp_path, env=env)
    assert "Set: 2 reps, 2 clean" in analysed.stdout, analysed.stdout

    no_video = run([rackwatch, "analyze"], cwd=tmp_path, env=env, check=False)
    assert no_video.returncode == 2 and "rackwatch analyze VIDEO" in no_video.stderr
    assert "$RACKWATCH_FOOTAGE" in no_video.stderr and "Traceback" not in no_video.stderr


def run(command: list[str], *, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
                            stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result
