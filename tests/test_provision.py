"""`rackwatch provision`: seeds for many racks from a CSV, checked with the tools the Pi itself runs.

- ``user-data`` is validated against cloud-init's own schema (``cloud-init schema --config-file``, Debian's
  cloud-init package: the same program Raspberry Pi OS runs at first boot);
- ``network-config`` goes through ``netplan generate --root-dir`` (Debian's netplan.io), which writes the
  wpa_supplicant configuration the Pi would use: it must hold the WPA key, never the passphrase;
- ``rackwatch.toml`` is read back by rackwatch's own config loader, and the password file by the doctor's reader
  (which reads it as systemd's EnvironmentFile= does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_tools import need_tool
from rackwatch.config import load_config
from rackwatch.doctor import rack_password
from rackwatch.provision import ProvisionError, provision, read_racks, wpa_psk
from rackwatch.rack import link_settings

HEADER = "rack_id,hostname,wifi_ssid,wifi_password,broker,username,password,ssh_key,timezone,wifi_country\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk5Zr5cL3Y2kq0m0c8dJ0xJtq3r6a0qO9fJ8cX0x0x0 installer@laptop"
GOOD = (HEADER +
        f'rack01,gym-rack01,Gym WiFi,correct horse battery,mqtt://broker.gym.lan:1883,rack01,"pa$s ""q"" \\ ü",'
        f'{KEY},Europe/Helsinki,fi\n'
        'rack02,gym-rack02,Gym WiFi,correct horse battery,mqtts://broker.gym.lan,rack02,second-secret,,,\n')


@pytest.fixture
def wheel(tmp_path) -> Path:
    """provision only copies the wheel into each seed; a file with a wheel's name stands in for it here."""
    path = tmp_path / "rackwatch-0.1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return path


@pytest.fixture
def seeds(tmp_path, wheel) -> Path:
    csv = tmp_path / "racks.csv"
    csv.write_text(GOOD)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")
    out = tmp_path / "seeds"
    written = provision(csv, out, wheel, ca, now_ms=1796300000000)
    assert [p.name for p in written] == ["rack01", "rack02"]
    return out


def test_the_psk_is_pbkdf2_of_the_passphrase_with_the_ssid():
    # The IEEE 802.11i test vector (passphrase "password", SSID "IEEE").
    assert wpa_psk("password", "IEEE") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"


def test_each_rack_gets_the_seed_files_and_its_bundle(seeds):
    rack = seeds / "rack01"
    assert sorted(p.name for p in rack.iterdir()) == ["meta-data", "network-config", "rackwatch", "user-data"]
    bundle = rack / "rackwatch"
    for name in ("install.sh", "manifest.json", "constraints/bookworm.txt", "constraints/trixie.txt",
                 "systemd/rackwatch.service", "rackwatch-0.1.0-py3-none-any.whl", "rackwatch.toml", "secrets.env"):
        assert (bundle / name).is_file(), name
    assert (bundle / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert (seeds / "rack02" / "rackwatch" / "ca.crt").is_file() and not (bundle / "ca.crt").exists()
    assert (rack / "meta-data").read_text() == "instance-id: rackwatch-rack01-1796300000000\n"
    assert not list(seeds.glob(".provision-*"))   # the staging folder is gone


def test_user_data_passes_cloud_inits_schema_and_holds_no_secret(seeds):
    cloud_init = need_tool("cloud-init", "cloud-init")
    for rack in ("rack01", "rack02"):
        path = seeds / rack / "user-data"
        result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout + result.stderr
        text = path.read_text()
        assert text.startswith("#cloud-config\n")
        assert "correct horse" not in text and "second-secret" not in text and "pa$s" not in text
    config = yaml.safe_load((seeds / "rack01" / "user-data").read_text())
    assert config["hostname"] == "gym-rack01" and config["timezone"] == "Europe/Helsinki"
    assert config["users"][0]["ssh_authorized_keys"] == [KEY] and config["users"][0]["lock_passwd"] is True
    steps = [step[2] for step in config["runcmd"]]
    # The password leaves the boot partition before anything else can fail.
    assert steps[0] == "install -D -m 600 /boot/firmware/rackwatch/secrets.env /etc/rackwatch/environment"
    assert steps[1] == "rm -f /boot/firmware/rackwatch/secrets.env"
    assert steps[-1].startswith("bash /boot/firmware/rackwatch/install.sh install --wheel "
                                "/boot/firmware/rackwatch/rackwatch-0.1.0-py3-none-any.whl")
    assert "users" not in yaml.safe_load((seeds / "rack02" / "user-data").read_text())   # no key, no admin user


def test_cloud_init_schema_check_can_fail(tmp_path):
    cloud_init = need_tool("cloud-init", "cloud-init")
    bad = tmp_path / "user-data"
    bad.write_text("#cloud-config\nhostname: 5\nruncmd: install everything\n")
    result = subprocess.run([cloud_init, "schema", "--config-file", str(bad)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0


def netplan_generate(network_config: Path, root: Path) -> subprocess.CompletedProcess:
    netplan = need_tool("netplan", "netplan.io")
    (root / "etc" / "netplan").mkdir(parents=True)
    target = root / "etc" / "netplan" / "50-cloud-init.yaml"   # where cloud-init renders it on the Pi
    shutil.copy(network_config, target)
    target.chmod(0o600)
    return subprocess.run([netplan, "generate", "--root-dir", str(root)], capture_output=True, text=True,
                          timeout=120)


def test_network_config_goes_through_netplan_with_the_key_not_the_passphrase(seeds, tmp_path):
    result = netplan_generate(seeds / "rack01" / "network-config", tmp_path / "root")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    wpa = (tmp_path / "root" / "run" / "netplan" / "wpa-wlan0.conf").read_text()
    assert 'ssid="Gym WiFi"' in wpa and "country=FI" in wpa
    assert f"psk={wpa_psk('correct horse battery', 'Gym WiFi')}\n" in wpa   # unquoted: the key itself
    assert "correct horse" not in wpa
    assert "correct horse" not in (seeds / "rack01" / "network-config").read_text()


def test_netplan_check_can_fail(tmp_path):
    broken = tmp_path / "network-config"
    broken.write_text("network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points: 5\n")
    assert netplan_generate(broken, tmp_path / "root").returncode != 0


def test_the_rack_config_and_password_read_back_as_the_service_reads_them(seeds):
    config = load_config(str(seeds / "rack01" / "rackwatch" / "rackwatch.toml"))
    assert config.rack.id == "rack01" and str(config.rack.state_dir) == "/var/lib/rackwatch"
    password = rack_password({}, seeds / "rack01" / "rackwatch" / "secrets.env")
    assert password == 'pa$s "q" \\ ü'
    link = link_settings(config.rack.id, config.rack.state_dir, config.mqtt, password=password)
    assert (link.host, link.port, link.username, link.tls_ca) == ("broker.gym.lan", 1883, "rack01", None)
    tls = load_config(str(seeds / "rack02" / "rackwatch" / "rackwatch.toml"))
    link = link_settings("rack02", tls.rack.state_dir, tls.mqtt)
    assert (link.port, link.tls_ca) == (8883, "/etc/rackwatch/ca.crt")


BAD_ROWS = [
    ("rack01,gym-rack01,Gym WiFi,short,mqtt://b:1883,rack01,pw,,,\n", "line 2, column wifi_password", "8 to 63"),
    ("rack01,gym-rack01,Gym WiFi,correct horse,http://b,rack01,pw,,,\n", "line 2, column broker", "mqtt://"),
    ("rack 01,gym-rack01,Gym WiFi,correct horse,mqtt://b,rack01,pw,,,\n", "line 2, column rack_id", "letters"),
    ("rack01,gym-rack01,Gym WiFi,correct horse,mqtt://b,rack01,pw,,Mars/Olympus,\n", "line 2, column timezone",
     "time zone"),
    ("rack01,gym-rack01,Gym WiFi,correct horse,mqtt://b,rack01,pw,,,\n"
     "rack01,gym-rack02,Gym WiFi,correct horse,mqtt://b,rack01,pw,,,\n", "line 3, column rack_id", "line 2"),
    ("rack01,gym_rack01,Gym WiFi,correct horse,mqtt://b,rack01,,,,\n", "line 2, column hostname", "letters"),
]


@pytest.mark.parametrize("rows, where, why", BAD_ROWS, ids=[w for _, w, _ in BAD_ROWS])
def test_a_bad_row_names_its_line_and_column_and_nothing_is_written(tmp_path, wheel, rows, where, why):
    csv = tmp_path / "racks.csv"
    # A good rack first: it must not be written either.
    csv.write_text(HEADER + "rackX,gym-rackx,Gym WiFi,correct horse,mqtt://b,rackX,pw,,,\n" + rows)
    where = where.replace("line 2", "line 3") if "line 3" not in where else where.replace("line 3", "line 4")
    why = why.replace("line 2", "line 3")
    out = tmp_path / "seeds"
    with pytest.raises(ProvisionError) as error:
        provision(csv, out, wheel)
    message = str(error.value)
    assert where in message and why in message and "nothing was written" in message
    assert not out.exists()


def test_a_wrong_header_is_refused(tmp_path):
    csv = tmp_path / "racks.csv"
    csv.write_text("rack,hostname,ssid\nrack01,a,b\n")
    with pytest.raises(ProvisionError, match="line 1 .*missing column.*rack_id.*unknown column.*rack"):
        read_racks(csv)


def test_the_command_says_what_is_wrong_without_a_traceback(tmp_path, wheel):
    csv = tmp_path / "racks.csv"
    csv.write_text(HEADER + "rack01,gym-rack01,Gym WiFi,short,mqtt://b,rack01,pw,,,\n")
    result = subprocess.run([sys.executable, "-m", "rackwatch.cli", "provision", str(csv), "--out",
                             str(tmp_path / "seeds"), "--wheel", str(wheel)], capture_output=True, text=True,
                            timeout=60, env={**os.environ})
    assert result.returncode == 2
    assert "line 2, column wifi_password" in result.stderr and "Traceback" not in result.stderr
    ok = tmp_path / "ok.csv"
    ok.write_text(HEADER + "rack01,gym-rack01,Gym WiFi,correct horse,mqtt://b,rack01,pw,,,\n")
    done = subprocess.run([sys.executable, "-m", "rackwatch.cli", "provision", str(ok), "--out",
                           str(tmp_path / "seeds"), "--wheel", str(wheel)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 rack seeds written" in done.stdout, done.stderr
