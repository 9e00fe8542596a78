"""The systemd units verify without a word, and every shell script passes shellcheck.

``systemd-analyze verify`` exits 0 even on warnings (an unknown key, a misspelt section), so the test asks for
*no output at all*. It also insists that every ``ExecStart=`` binary exists and is executable, which on a build
machine it is not (the units point at ``/opt/rackwatch/current/venv/bin/rackwatch``, created by install.sh on a
Pi). So the test verifies a temporary copy of each unit in which that one path is replaced by this test venv's
own ``rackwatch`` script: everything else (keys, values, device classes, dependencies) is verified as shipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import real_parts
from deploy_tools import need_tool

PROJECT = Path(__file__).resolve().parents[1]
UNITS = sorted((PROJECT / "systemd").glob("*.service"))
INSTALLED_RACKWATCH = "/opt/rackwatch/current/venv/bin/rackwatch"


def _scripts() -> list[Path]:
    """Every shell script of the project: *.sh files, and files of ours whose first line names a shell."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT,
                             capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in tracked:
        path = PROJECT / name
        if not path.is_file() or ".venv" in path.parts:
            continue
        if path.suffix == ".sh":
            found.append(path)
            continue
        try:
            first = path.open("rb").readline(100)
        except OSError:
            continue
        if first.startswith(b"#!") and any(shell in first for shell in (b"bash", b"/sh", b"env sh")):
            found.append(path)
    return found


def test_the_project_ships_both_units():
    assert [u.name for u in UNITS] == ["rackwatch-dashboard.service", "rackwatch.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_with_no_output(unit, tmp_path):
    analyze = need_tool("systemd-analyze", "systemd")
    text = unit.read_text()
    assert INSTALLED_RACKWATCH in text, "the unit should run the installed release's rackwatch"
    here = Path(sys.executable).with_name("rackwatch")
    assert here.is_file(), f"{here} is missing: run deploy/dev-setup.sh"
    copy = tmp_path / unit.name
    copy.write_text(text.replace(INSTALLED_RACKWATCH, str(here)))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_bad_key(tmp_path):
    """The check above can fail: a misspelt key makes systemd-analyze talk (while still exiting 0)."""
    analyze = need_tool("systemd-analyze", "systemd")
    copy = tmp_path / "rackwatch.service"
    copy.write_text((PROJECT / "systemd" / "rackwatch.service").read_text()
                    .replace(INSTALLED_RACKWATCH, str(Path(sys.executable).with_name("rackwatch")))
                    .replace("WatchdogSec=", "WatchDogSec="))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in result.stdout + result.stderr


def test_rack_unit_keeps_camera_and_gpio_reachable():
    """Hardening must not hide the devices: no PrivateDevices, and the camera and GPIO classes allowed."""
    text = (PROJECT / "systemd" / "rackwatch.service").read_text()
    lines = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    assert not any(line.startswith("PrivateDevices=") for line in lines)
    for needed in ("Type=notify", "DevicePolicy=closed", "DeviceAllow=char-video4linux rw",
                   "DeviceAllow=char-media rw", "DeviceAllow=char-dma_heap rw", "DeviceAllow=char-gpiochip rw",
                   "SupplementaryGroups=video gpio", "RuntimeDirectory=rackwatch", "Environment=LG_WD=%t/rackwatch",
                   "StateDirectory=rackwatch", "Restart=on-failure", "StartLimitBurst=5"):
        assert needed in lines, needed


def test_there_are_scripts_to_check():
    names = {p.relative_to(PROJECT).as_posix() for p in _scripts()}
    assert {"deploy/dev-setup.sh", ".ci/run"} <= names


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_script_is_shellcheck_clean(script):
    shellcheck = need_tool("shellcheck", "shellcheck")
    result = subprocess.run([shellcheck, "--external-sources", str(script)], capture_output=True, text=True,
                            cwd=script.parent, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _ansible_playbook() -> str:
    """ansible-playbook from the test extras (ansible-core from PyPI, a few MB), beside this Python."""
    path = Path(sys.executable).with_name("ansible-playbook")
    return str(real_parts.require(path.is_file() and path, f"{path} is missing",
                                  "pip install -e '.[test]' (deploy/dev-setup.sh does it)"))


@pytest.mark.parametrize("broken", [False, True], ids=["shipped", "broken-copy-fails"])
def test_fleet_playbook_passes_ansibles_syntax_check(broken, tmp_path):
    playbook = PROJECT / "deploy" / "ansible" / "update-racks.yml"
    if broken:
        copy = tmp_path / "update-racks.yml"
        copy.write_text(playbook.read_text().replace("  tasks:", "  taskz:"))
        playbook = copy
    result = subprocess.run([_ansible_playbook(), "--syntax-check", "-i",
                             str(PROJECT / "deploy" / "ansible" / "inventory.example.ini"), str(playbook)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path), "ANSIBLE_HOME": str(tmp_path)})
    assert (result.returncode != 0) == broken, result.stdout + result.stderr
