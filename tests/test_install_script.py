"""deploy/install.sh, run for real into a throwaway root: install, a second run that changes nothing, upgrades
gated by `rackwatch doctor` (a failing one rolls back), uninstall.

What runs here and what does not (install.sh says the same, one "skipped:" line per step):

- run: the venv with system site packages, pip installing the real wheel (built here from the project) with the
  OS release's constraints file, the model copied and verified against the manifest, the units installed and
  enabled (``systemctl --root`` needs no running systemd), the config, the atomic symlink switch, the gate and
  the roll-back, pruning old releases, uninstall;
- skipped off a Pi: ``apt-get install`` of python3-picamera2/-lgpio/-gpiozero (the Raspberry Pi archive),
  ``useradd rackwatch``, and systemctl stop/start/daemon-reload of the live service;
- pip runs with ``--no-deps`` (``RACKWATCH_PIP_ARGS``): the wheel's own dependencies (OpenCV, LiteRT, NumPy)
  would come from the Pi's OS and PyPI, and installing them into every throwaway venv would take minutes. So the
  gate is a stand-in doctor (``RACKWATCH_DOCTOR``) that passes or fails as the test says and records which
  release was current when it ran.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
INSTALL = PROJECT / "deploy" / "install.sh"
MODEL = PROJECT / "models" / "movenet_singlepose_lightning_int8.tflite"


def build_wheel(source: Path, out: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source), "-w", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [wheel] = out.glob("rackwatch-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The project's wheel as it is (0.1.0) and as the next release (0.1.1), built from a copy of the project."""
    base = tmp_path_factory.mktemp("wheels")
    current = build_wheel(PROJECT, base / "current")
    copy = base / "next-src"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT / name, copy / name)
    shutil.copytree(PROJECT / "edge", copy / "edge", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    version = current.name.split("-")[1]
    nxt = version.rsplit(".", 1)[0] + "." + str(int(version.rsplit(".", 1)[1]) + 1)
    for path in (copy / "pyproject.toml", copy / "edge" / "rackwatch" / "__init__.py"):
        path.write_text(path.read_text().replace(f'"{version}"', f'"{nxt}"', 1))
    upgrade = build_wheel(copy, base / "next")
    assert upgrade.name.startswith(f"rackwatch-{nxt}-")
    return {"old": current, "new": upgrade, "old_version": version, "new_version": nxt}


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('PRETTY_NAME="Raspberry Pi OS"\nVERSION_CODENAME=bookworm\n')
    return root


def fake_doctor(tmp_path: Path, root: Path, healthy: bool) -> str:
    """A stand-in for `rackwatch doctor`: notes the release it was run on, then passes or fails."""
    script = tmp_path / ("doctor-ok" if healthy else "doctor-fails")
    script.write_text("#!/bin/sh\n"
                      f"readlink {root}/opt/rackwatch/current >> {tmp_path}/doctor-saw\n"
                      + ("echo '[ok  ] broker: fine'\nexit 0\n" if healthy else
                         "echo '[FAIL] broker: The broker refused rack01'\nexit 1\n"))
    script.chmod(0o755)
    return str(script)


def install(root: Path, *args, doctor: str = "true", action: str = "install") -> subprocess.CompletedProcess:
    env = {**os.environ, "RACKWATCH_PIP_ARGS": "--no-deps", "RACKWATCH_DOCTOR": doctor, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(INSTALL), action, "--root", str(root), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with what a change would touch: type, size, mode, mtime, link target."""
    seen = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        target = os.readlink(path) if path.is_symlink() else None
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, target)
    return seen


def test_install_into_a_throwaway_root_and_a_second_run_changes_nothing(root, wheels):
    first = install(root, "--wheel", wheels["old"], "--model", MODEL)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    # What was skipped off a Pi is said, step by step.
    assert "skipped: apt-get install python3-picamera2 python3-lgpio python3-gpiozero" in out
    assert "skipped: useradd rackwatch" in out and "skipped: systemctl start rackwatch.service" in out

    opt = root / "opt" / "rackwatch"
    version = wheels["old_version"]
    assert os.readlink(opt / "current") == f"releases/{version}"
    venv = opt / "current" / "venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "bin" / "rackwatch").is_file()
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import rackwatch; print(rackwatch.__version__)"],
                               capture_output=True, text=True, cwd=root)
    assert installed.stdout.strip() == version, installed.stderr
    model = opt / "models" / MODEL.name
    assert hashlib.sha256(model.read_bytes()).hexdigest() == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    units = root / "etc" / "systemd" / "system"
    assert (units / "rackwatch.service").read_text() == (PROJECT / "systemd" / "rackwatch.service").read_text()
    assert (units / "rackwatch-dashboard.service").is_file()
    assert os.readlink(units / "multi-user.target.wants" / "rackwatch.service").endswith("/rackwatch.service")
    assert not (units / "multi-user.target.wants" / "rackwatch-dashboard.service").exists()
    assert (root / "etc" / "rackwatch" / "rackwatch.toml").stat().st_mode & 0o777 == 0o640

    before = snapshot(root)
    second = install(root, "--wheel", wheels["old"], "--model", MODEL)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"release {version} is already installed" in second.stdout
    assert "model movenet_singlepose_lightning_int8.tflite already installed" in second.stdout
    assert f"release {version} is already the current one" in second.stdout
    assert snapshot(root) == before


def test_an_upgrade_that_fails_doctor_rolls_back_and_one_that_passes_stays(root, wheels, tmp_path):
    old, new = wheels["old_version"], wheels["new_version"]
    assert install(root, "--wheel", wheels["old"], "--model", MODEL).returncode == 0
    opt = root / "opt" / "rackwatch"

    failed = install(root, "--wheel", wheels["new"], "--model", MODEL, doctor=fake_doctor(tmp_path, root, False))
    assert failed.returncode == 1
    assert "[FAIL] broker" in failed.stdout
    assert f"found a problem with release {new} (above): rolled back to {old}" in failed.stderr
    assert os.readlink(opt / "current") == f"releases/{old}"
    # The doctor examined the new release, not the old one.
    assert (tmp_path / "doctor-saw").read_text().split() == [f"releases/{new}"]

    passed = install(root, "--wheel", wheels["new"], "--model", MODEL, doctor=fake_doctor(tmp_path, root, True))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert os.readlink(opt / "current") == f"releases/{new}"
    assert f"release {new} is already installed" in passed.stdout   # built once, by the failed attempt
    assert sorted(p.name for p in (opt / "releases").iterdir()) == sorted([old, new])   # the old one kept


def test_uninstall_keeps_the_settings_unless_purged(root, wheels):
    assert install(root, "--wheel", wheels["old"], "--model", MODEL).returncode == 0
    removed = install(root, action="uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt" / "rackwatch").exists()
    assert not (root / "etc" / "systemd" / "system" / "rackwatch.service").exists()
    assert not (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "rackwatch.service").exists()
    assert (root / "etc" / "rackwatch" / "rackwatch.toml").is_file()
    before = snapshot(root)
    assert install(root, action="uninstall").returncode == 0 and snapshot(root) == before
    purged = install(root, "--purge", action="uninstall")
    assert purged.returncode == 0 and not (root / "etc" / "rackwatch").exists()


def test_bad_input_is_refused_in_words(root, wheels, tmp_path):
    (root / "etc" / "os-release").write_text("VERSION_CODENAME=bullseye\n")
    old_os = install(root, "--wheel", wheels["old"], "--model", MODEL)
    assert old_os.returncode == 2 and "bullseye is not supported" in old_os.stderr
    (root / "etc" / "os-release").write_text("VERSION_CODENAME=trixie\n")
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(b"x" * 100)
    bad_model = install(root, "--wheel", wheels["old"], "--model", wrong)
    assert bad_model.returncode == 2 and "wrong checksum" in bad_model.stderr
    assert not (root / "opt" / "rackwatch" / "current").exists()
    no_root = subprocess.run(["bash", str(INSTALL), "install", "--wheel", str(wheels["old"])], capture_output=True,
                             text=True, timeout=60)
    if not Path("/proc/device-tree/model").exists():
        assert no_root.returncode == 2 and "give --root DIR" in no_root.stderr


def test_constraints_pin_numpy_to_each_os_release():
    """The OS's picamera2 is built against the OS's NumPy: each release's constraints pin exactly that one."""
    expected = {"bookworm": "numpy==1.24.2", "trixie": "numpy==2.2.4"}
    for release, pin in expected.items():
        lines = (PROJECT / "deploy" / "constraints" / f"{release}.txt").read_text().splitlines()
        assert pin in lines


def test_a_provisioned_seed_installs_its_rack(root, wheels, tmp_path):
    """First boot, played here: the seed's runcmd steps, run in order with the boot partition and / pointed at
    folders (and install.sh given --root and the model, as this machine cannot download it)."""
    import yaml

    from rackwatch.provision import provision

    (root / "etc" / "os-release").write_text("VERSION_CODENAME=trixie\n")
    csv = tmp_path / "racks.csv"
    csv.write_text("rack_id,hostname,wifi_ssid,wifi_password,broker,username,password\n"
                   "rack07,gym-rack07,Gym WiFi,correct horse battery,mqtt://broker.gym.lan,rack07,it's-s3cret\n")
    [boot] = provision(csv, tmp_path / "seeds", wheels["old"])
    steps = [step[2] for step in yaml.safe_load((boot / "user-data").read_text())["runcmd"]]
    env = {**os.environ, "RACKWATCH_PIP_ARGS": "--no-deps", "RACKWATCH_DOCTOR": "true", "PYTHON": sys.executable}
    for step in steps:
        command = (step.replace("/boot/firmware", str(boot)).replace(" /etc/", f" {root}/etc/")
                   .replace(">/var/log/", f">{tmp_path}/"))
        if "install.sh install" in command:
            command = command.replace(" >", f" --root {root} --model {MODEL} >", 1)
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=600)
        log = tmp_path / "rackwatch-install.log"
        assert result.returncode == 0, (command, result.stderr, log.read_text() if log.exists() else "")

    etc = root / "etc" / "rackwatch"
    assert (etc / "environment").stat().st_mode & 0o777 == 0o600
    assert (etc / "environment").read_text() == "RACKWATCH_MQTT_PASSWORD=\"it's-s3cret\"\n"
    assert not (boot / "rackwatch" / "secrets.env").exists()   # gone from the boot partition
    assert (etc / "rackwatch.toml").read_text() == (boot / "rackwatch" / "rackwatch.toml").read_text()
    assert 'id = "rack07"' in (etc / "rackwatch.toml").read_text()
    assert os.readlink(root / "opt" / "rackwatch" / "current") == f"releases/{wheels['old_version']}"
    assert (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "rackwatch.service").is_symlink()
    assert "constraints for trixie" in (tmp_path / "rackwatch-install.log").read_text()
