"""The suite cannot go quietly green: under CI=true a missing real part fails the run, elsewhere it skips."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import real_parts

BROKER_TEST = f"""
import sys
sys.path.insert(0, {str(real_parts.PROJECT / "tests")!r})
from mqtt_broker import broker

def test_a_rack_needs_a_broker(broker):
    assert broker.running
"""


def run_broker_test(tmp_path, **env) -> subprocess.CompletedProcess:
    """A one-test suite that asks for the ``broker`` fixture, run by pytest in a child process with ``env``."""
    test = tmp_path / "test_needs_a_broker.py"
    test.write_text(BROKER_TEST)
    environ = {k: v for k, v in os.environ.items() if k != "CI"} | env
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test)],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


def test_ci_with_mosquitto_hidden_fails_loudly_and_says_what_to_install(tmp_path):
    result = run_broker_test(tmp_path, CI="true", RACKWATCH_MOSQUITTO="/nonexistent/mosquitto")
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "passed" not in result.stdout and "skipped" not in result.stdout
    assert "CI=true and a real part is missing" in result.stdout
    assert "$RACKWATCH_MOSQUITTO=/nonexistent/mosquitto" in result.stdout and "apt install mosquitto" in result.stdout


def test_outside_ci_a_hidden_mosquitto_skips_with_the_reason(tmp_path):
    result = run_broker_test(tmp_path, RACKWATCH_MOSQUITTO="/nonexistent/mosquitto")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "apt install mosquitto" in result.stdout


def test_the_same_test_runs_when_mosquitto_is_there(tmp_path):
    result = run_broker_test(tmp_path, CI="true")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout


@pytest.mark.parametrize("value, ci", [("true", True), ("1", True), ("yes", True), ("", False), ("false", False),
                                       ("0", False)])
def test_what_counts_as_ci(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert real_parts.in_ci() is ci


def test_programs_are_found_on_path_then_in_usr_sbin_and_the_override_is_the_only_place_looked(monkeypatch,
                                                                                            tmp_path):
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    broker = sbin / "mosquitto"
    broker.write_text("#!/bin/sh\n")
    broker.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("RACKWATCH_MOSQUITTO", raising=False)
    assert real_parts.find_program("mosquitto", "RACKWATCH_MOSQUITTO", fallback_dirs=(str(sbin),)) == (
        str(broker), str(sbin))
    monkeypatch.setenv("PATH", str(sbin))
    assert real_parts.find_program("mosquitto", "RACKWATCH_MOSQUITTO", fallback_dirs=()) == (str(broker), "PATH")
    monkeypatch.setenv("RACKWATCH_MOSQUITTO", str(tmp_path / "nowhere"))
    assert real_parts.find_program("mosquitto", "RACKWATCH_MOSQUITTO", fallback_dirs=(str(sbin),))[0] is None


def test_a_missing_part_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true .* no widget here. Install it: apt install widget"):
        real_parts.require(None, "no widget here", "apt install widget")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="no widget here. Install it: apt install widget"):
        real_parts.require(None, "no widget here", "apt install widget")
    assert real_parts.require("/usr/bin/widget", "no widget here", "apt install widget") == "/usr/bin/widget"


def test_a_missing_module_stops_a_whole_test_module_the_same_way(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true .* 'no_such_extra' cannot be imported"):
        real_parts.module("no_such_extra", "pip install it", module_level=True)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="'no_such_extra' cannot be imported. Install it: pip install it"):
        real_parts.module("no_such_extra", "pip install it", module_level=True)


def test_ci_without_the_footage_fails_even_the_tests_parametrized_over_its_clips(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k != "CI"} | {"CI": "true", "RACKWATCH_FOOTAGE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_footage.py"],
                            cwd=real_parts.PROJECT, env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    assert "skipped" not in result.stdout and "passed" not in result.stdout
    assert f"no {tmp_path / 'labels.json'}" in result.stdout
