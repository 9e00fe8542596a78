"""`rackwatch doctor` with real parts: a real Mosquitto (good password, wrong password, broker down, TLS with the
right and a wrong CA), a missing and a corrupt model, a recording in place of the camera, the panel's pins on
gpiozero's MockFactory, and this machine's clock, disk and temperature readers.

Not tested: a full state folder. Filling a real file system needs a loop mount or tmpfs (root and mount rights a
CI job does not always have); the threshold logic is one comparison on ``shutil.disk_usage``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import FOOTAGE
from mqtt_broker import MosquittoBroker, free_port
from test_camera import pi_camera  # noqa: F401  (the stand-in Pi camera)
from rackwatch.config import load_config
from rackwatch.doctor import (Finding, check_broker, check_clock, check_disk, check_gpio, check_temperature,
                              clock_synchronised, format_findings, panel_pins, rack_password, run_doctor)
from rackwatch.mqtt import LinkSettings
from rackwatch.panel import PanelSettings

pytestmark = pytest.mark.broker


def doctor(*args, env=None, timeout=120, before=()):
    """``rackwatch [BEFORE] doctor ARGS``, without a password from the test's own environment."""
    return subprocess.run([sys.executable, "-m", "rackwatch.cli", *map(str, before), "doctor", *map(str, args)],
                          capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "RACKWATCH_MQTT_PASSWORD": "", **(env or {})})


@pytest.fixture
def rack_broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker", users={"rack01": "right-pass"}) as b:
        yield b


def test_good_credentials_pass(rack_broker):
    result = doctor("--check", "broker", "--json", "--broker", f"mqtt://{rack_broker.host}:{rack_broker.port}",
                    "--username", "rack01", "--password", "right-pass")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    [broker] = report["findings"]
    assert broker["status"] == "ok" and "accepts rack01" in broker["summary"]


def test_a_wrong_password_fails_with_where_to_set_it(rack_broker):
    result = doctor("--check", "broker", "--broker", f"mqtt://{rack_broker.host}:{rack_broker.port}",
                    "--username", "rack01", "--password", "wrong")
    assert result.returncode == 1
    assert "refused rack01: wrong username or password" in result.stdout
    assert "RACKWATCH_MQTT_PASSWORD=... in /etc/rackwatch/environment" in result.stdout


def test_the_password_comes_from_the_environment_like_the_service(rack_broker):
    result = doctor("--check", "broker", "--broker", f"mqtt://{rack_broker.host}:{rack_broker.port}",
                    "--username", "rack01", env={"RACKWATCH_MQTT_PASSWORD": "right-pass"})
    assert result.returncode == 0, result.stdout


def test_a_broker_that_is_down_fails_with_what_to_check(tmp_path):
    result = doctor("--check", "broker", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--username", "rack01")
    assert result.returncode == 1
    assert "Nothing accepts connections at 127.0.0.1:" in result.stdout
    assert "Check that Mosquitto runs on the broker machine" in result.stdout


def test_tls_with_the_gym_ca_passes_and_with_a_stranger_ca_fails(tmp_path):
    from test_mqtt_link import make_certificates

    certs = make_certificates(tmp_path / "certs")
    stranger = make_certificates(tmp_path / "stranger")
    with MosquittoBroker(tmp_path / "broker", tls=certs) as b:
        good = check_broker(LinkSettings(rack="rack01", host="127.0.0.1", port=b.tls_port, tls_ca=str(certs["ca"])))
        assert good.status == "ok" and good.summary.endswith("over TLS."), good
        bad = check_broker(LinkSettings(rack="rack01", host="127.0.0.1", port=b.tls_port,
                                        tls_ca=str(stranger["ca"])))
        assert bad.status == "problem" and "certificate that tls_ca does not vouch for" in bad.summary
        assert "the CA that signed the broker's certificate" in bad.advice
        # Plain MQTT spoken to the TLS port: no answer the doctor could take for a broker's.
        plain = check_broker(LinkSettings(rack="rack01", host="127.0.0.1", port=b.tls_port), timeout=2)
        assert plain.status == "problem" and "TLS is on exactly when the broker expects it" in plain.advice


def test_a_missing_and_a_corrupt_model_are_problems_with_what_to_do(tmp_path):
    missing = doctor("--check", "model", before=("--model", tmp_path / "nowhere.tflite"))
    assert missing.returncode == 1
    assert "No pose model at" in missing.stdout and "rackwatch models fetch" in missing.stdout
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a model" * 1000)
    damaged = doctor("--check", "model", before=("--model", corrupt))
    assert damaged.returncode == 1
    assert "damaged or not the expected file" in damaged.stdout and "fetch it again" in damaged.stdout


def test_a_recording_in_place_of_the_camera_is_checked_with_its_aim(tmp_path):
    result = doctor("--check", "model", "--check", "camera", "--check", "aim", "--json",
                    "--source", FOOTAGE / "khammingfatt" / "Correct_Demo.mp4")
    report = json.loads(result.stdout)
    checks = {(f["check"], f["status"]) for f in report["findings"]}
    assert ("model", "ok") in checks and ("camera", "ok") in checks and ("aim: square", "problem") in checks
    assert result.returncode == 1 and report["ok"] is False


def test_off_a_pi_there_is_no_camera_and_no_gpio_only_warnings(tmp_path):
    config = load_config(None).model_copy(update={"panel": PanelSettings()})   # a panel is configured
    args = SimpleNamespace(check=["camera", "gpio"], source=None)
    report = run_doctor(args, config, on_pi=False)
    assert [(f.check, f.status) for f in report.findings] == [("camera", "warning"), ("gpio", "warning")]
    assert "No GPIO on this machine" in report.findings[1].summary
    assert report.ok


def test_the_panel_pins_on_mock_gpio_are_free():
    pins = panel_pins(PanelSettings())
    assert 17 in pins and 18 in pins and len(pins) == 20
    found = check_gpio(pins, MockFactory(), on_pi=True)
    assert found.status == "ok" and "20 pins are free" in found.summary
    assert check_gpio(panel_pins(None), None, on_pi=True).status == "ok"   # no panel: nothing to check


def test_a_pin_that_cannot_be_claimed_is_named():
    class Busy(MockFactory):
        def pin(self, spec, **kwargs):
            if spec == 17:
                raise OSError("GPIO busy")
            return super().pin(spec, **kwargs)

    found = check_gpio([4, 17], Busy(), on_pi=True)
    assert found.status == "problem" and "GPIO17 (GPIO busy)" in found.summary and "GPIO4" not in found.summary


def test_clock_disk_and_heat_say_what_to_do(tmp_path):
    assert clock_synchronised() in (True, False, None)   # this machine's answer, whatever it is
    unsynced = check_clock(lambda: False)
    assert unsynced.status == "problem" and "timedatectl status" in unsynced.advice
    assert check_clock(lambda: True).status == "ok"
    disk = check_disk(tmp_path / "state")
    assert disk.status in ("ok", "warning") and "not created yet" in disk.summary
    hot = check_temperature(lambda: 83.0, lambda: True)
    assert [f.status for f in hot] == ["problem", "problem"]
    assert "fan" in hot[0].advice and "power supply" in hot[1].advice
    assert [f.status for f in check_temperature(lambda: None, lambda: None)] == ["ok"]


def test_the_password_file_of_the_service_is_read(tmp_path):
    env_file = tmp_path / "environment"
    env_file.write_text("# rack secrets\nRACKWATCH_MQTT_PASSWORD='s3cret'\n")
    assert rack_password({}, env_file) == "s3cret"
    assert rack_password({"RACKWATCH_MQTT_PASSWORD": "env"}, env_file) == "env"
    assert rack_password({}, tmp_path / "missing") is None


def test_the_text_report_says_what_to_do_only_for_what_is_wrong():
    text = format_findings([Finding("clock", "ok", "fine", "nothing"), Finding("disk", "problem", "full", "free it")])
    assert text.splitlines() == ["[ok  ] clock: fine", "[FAIL] disk: full", "       what to do: free it"]


def test_on_a_pi_the_camera_is_checked_streaming(pi_camera):
    """The Pi camera through the stand-in for Picamera2 (tests/fake_picamera) filming a frame of real footage."""
    from rackwatch.doctor import check_camera

    found = check_camera(None, (320, 240), 15.0, on_pi=True)
    assert found.status == "ok" and found.summary.startswith("The camera is streaming (10 frames read")
