"""``rackwatch provision racks.csv --out DIR``: one first-boot seed per rack, from a spreadsheet.

An installer fills in one row per rack::

    rack_id,hostname,wifi_ssid,wifi_password,broker,username,password[,ssh_key,timezone,wifi_country]

and gets a folder per rack to copy onto the boot partition of a freshly flashed Raspberry Pi OS card (the FAT
partition, ``/boot/firmware`` on the Pi). Raspberry Pi OS (Trixie and later) runs cloud-init's NoCloud data source
from that partition at first boot, reading the three files Raspberry Pi Imager 2 writes there:

``meta-data``       the instance id (a new id makes cloud-init treat the card as a new machine)
``network-config``  netplan version 2: the gym's Wi-Fi, with the WPA pre-shared key (PBKDF2-HMAC-SHA1 of the
                    passphrase, the SSID as salt, 4096 rounds, 32 bytes), never the passphrase itself
``user-data``       ``#cloud-config``: host name, time zone, an admin user for the SSH key, and ``runcmd``
                    steps that install rackwatch

beside which it puts ``rackwatch/``: install.sh with its constraints, the units, the wheel, the model manifest,
the rack's own ``rackwatch.toml`` and ``secrets.env`` (the broker password). At first boot ``runcmd`` moves the
password to ``/etc/rackwatch/environment`` (mode 600) and deletes it from the boot partition (which any computer
the card is put in can read), installs the config, then runs install.sh, which installs and starts rackwatch.

Every row is checked before anything is written: a bad row is a clear error naming its line and column, and no
folder is written at all.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import tempfile
import time
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .mqtt import RACK_ID

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("rack_id", "hostname", "wifi_ssid", "wifi_password", "broker", "username", "password")
OPTIONAL = ("ssh_key", "timezone", "wifi_country")
BOOT = "/boot/firmware"   # where Raspberry Pi OS mounts the boot partition (Bookworm and Trixie)
ADMIN_USER = "rackadmin"
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
SSH_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                     r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( .*)?")


class ProvisionError(ConfigError):
    """The CSV (or a file provision needs) is not usable; nothing was written."""


def wpa_psk(passphrase: str, ssid: str) -> str:
    """The 64-hex-digit WPA pre-shared key for a passphrase, as wpa_passphrase and Raspberry Pi Imager make it."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


@dataclass(frozen=True)
class RackSeed:
    """One valid row of racks.csv."""

    rack_id: str
    hostname: str
    wifi_ssid: str
    wifi_psk: str
    host: str
    port: int
    tls: bool
    username: str
    password: str
    ssh_key: str = ""
    timezone: str = ""
    wifi_country: str = ""


def read_racks(path: Path) -> list[RackSeed]:
    """Every row of the CSV, checked; :class:`ProvisionError` listing every bad cell otherwise."""
    from .rack import parse_broker_url

    try:
        text = Path(path).read_text(encoding="utf-8-sig")   # a spreadsheet's "CSV UTF-8" starts with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"{path} cannot be read ({exc}). Give the racks' CSV file, saved as UTF-8.") from None
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    unknown = [name for name in header if name not in REQUIRED + OPTIONAL]
    if missing or unknown:
        problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                   ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
        raise ProvisionError(f"{path}, line 1 (the header): {'; '.join(problems)}. The header must be "
                             f"{','.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}). Nothing was written.")
    reader.fieldnames = header
    errors: list[str] = []
    seeds: list[RackSeed] = []
    seen: dict[str, dict[str, int]] = {"rack_id": {}, "hostname": {}}
    for row in reader:
        line = reader.line_num
        before = len(errors)
        if None in row:
            errors.append(f"line {line}: more cells than columns (a comma inside a value needs quotes)")
            continue
        cells = {key: (value or "").strip() for key, value in row.items()}
        if not any(cells.values()):
            continue   # a blank line at the end of a spreadsheet export

        def bad(column: str, why: str) -> None:
            errors.append(f"line {line}, column {column} ({cells.get(column)!r}): {why}")

        for column in REQUIRED:
            if not cells.get(column):
                bad(column, "empty; every rack needs one")
        if cells["rack_id"] and not RACK_ID.fullmatch(cells["rack_id"]):
            bad("rack_id", "use 1-64 letters, digits, '-' or '_' (it becomes an MQTT topic level)")
        if cells["hostname"] and not HOSTNAME.fullmatch(cells["hostname"]):
            bad("hostname", "use up to 63 letters, digits and inner '-'")
        for column in ("rack_id", "hostname"):
            value = cells[column].lower()
            if value and value in seen[column]:
                bad(column, f"the same as on line {seen[column][value]}; each rack needs its own")
            seen[column].setdefault(value, line)
        ssid, passphrase = cells["wifi_ssid"], row.get("wifi_password") or ""
        if ssid and len(ssid.encode()) > 32:
            bad("wifi_ssid", "longer than 32 bytes, which no Wi-Fi network name can be")
        is_psk = bool(re.fullmatch(r"[0-9a-fA-F]{64}", passphrase))
        if passphrase and not is_psk and not (8 <= len(passphrase) <= 63 and passphrase.isprintable()
                                              and passphrase.isascii()):
            bad("wifi_password", f"{len(passphrase)} characters; a WPA passphrase has 8 to 63 printable ASCII "
                "characters (or give the 64-hex-digit key itself)")
        host = port = tls = None
        if cells["broker"]:
            try:
                host, port, tls = parse_broker_url(cells["broker"])
            except ConfigError as exc:
                bad("broker", str(exc).replace("--broker ", "", 1))
        for column in ("username", "password"):
            if any(c in (row.get(column) or "") for c in "\r\n\0"):
                bad(column, "holds a line break")
        if cells.get("ssh_key") and not SSH_KEY.fullmatch(cells["ssh_key"]):
            bad("ssh_key", "not an OpenSSH public key (the one line of a .pub file, e.g. 'ssh-ed25519 AAAA...')")
        if cells.get("timezone") and cells["timezone"] not in zoneinfo.available_timezones():
            bad("timezone", "not a time zone name; use one like Europe/Helsinki (see `timedatectl "
                "list-timezones`)")
        if cells.get("wifi_country") and not re.fullmatch(r"[A-Za-z]{2}", cells["wifi_country"]):
            bad("wifi_country", "use the two-letter country code, e.g. FI (it sets the Wi-Fi channels allowed)")
        if len(errors) == before:
            seeds.append(RackSeed(
                rack_id=cells["rack_id"], hostname=cells["hostname"], wifi_ssid=ssid,
                wifi_psk=passphrase.lower() if is_psk else wpa_psk(passphrase, ssid), host=host, port=port,
                tls=tls, username=cells["username"], password=row["password"], ssh_key=cells.get("ssh_key", ""),
                timezone=cells.get("timezone", ""), wifi_country=cells.get("wifi_country", "").upper()))
    if errors:
        raise ProvisionError(f"{path} has {len(errors)} problem(s); nothing was written. Fix them and run "
                             "provision again:\n  " + "\n  ".join(errors))
    if not seeds:
        raise ProvisionError(f"{path} has a header but no rack rows. Add one row per rack. Nothing was written.")
    return seeds


# -- the files of one seed --------------------------------------------------------------------------------------------

def _q(value: str) -> str:
    """A double-quoted string that YAML and TOML both read back as ``value`` (JSON's escapes are valid in both)."""
    return json.dumps(value)


def env_quote(value: str) -> str:
    """A value that systemd's EnvironmentFile= and a shell both read back as ``value``: single quotes (nothing
    inside is special), or double quotes with backslash and quote escaped when the value holds a single quote."""
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def meta_data(seed: RackSeed, now_ms: int) -> str:
    return f"instance-id: rackwatch-{seed.rack_id}-{now_ms}\n"


def network_config(seed: RackSeed) -> str:
    lines = ["network:", "  version: 2", "  wifis:", "    wlan0:", "      dhcp4: true"]
    if seed.wifi_country:
        lines.append(f"      regulatory-domain: {_q(seed.wifi_country)}")
    lines += ["      access-points:", f"        {_q(seed.wifi_ssid)}:",
              f"          password: {_q(seed.wifi_psk)}", "      optional: true"]
    return "\n".join(lines) + "\n"


def rack_config(seed: RackSeed) -> str:
    """The rack's rackwatch.toml: only the [rack] and [mqtt] keys; every other setting keeps its default."""
    lines = [f"# rackwatch settings for rack {seed.rack_id}, written by `rackwatch provision`.",
             "# Every other setting has its default: see deploy/rackwatch.example.toml.",
             "# The broker password is in /etc/rackwatch/environment (RACKWATCH_MQTT_PASSWORD), mode 600.",
             "", "[rack]", f"id = {_q(seed.rack_id)}", 'state_dir = "/var/lib/rackwatch"', "",
             "[mqtt]", f"host = {_q(seed.host)}", f"port = {seed.port}", f"username = {_q(seed.username)}"]
    if seed.tls:
        lines.append('tls_ca = "/etc/rackwatch/ca.crt"')
    return "\n".join(lines) + "\n"


def user_data(seed: RackSeed, wheel_name: str) -> str:
    """``#cloud-config`` for the rack. It holds no secret: the password travels in rackwatch/secrets.env."""
    bundle = f"{BOOT}/rackwatch"
    lines = ["#cloud-config",
             f"# First boot of rack {seed.rack_id}, written by `rackwatch provision` (docs/deploy.md).",
             f"hostname: {_q(seed.hostname)}", "manage_etc_hosts: true"]
    if seed.timezone:
        lines.append(f"timezone: {_q(seed.timezone)}")
    if seed.ssh_key:
        lines += ["enable_ssh: true", "ssh_pwauth: false", "users:", f"- name: {ADMIN_USER}",
                  "  groups: users,adm,video,gpio,sudo", "  shell: /bin/bash", "  lock_passwd: true",
                  "  sudo: ALL=(ALL) NOPASSWD:ALL", "  ssh_authorized_keys:", f"    - {_q(seed.ssh_key)}"]
    steps = [
        # The password first, and off the boot partition at once, whatever happens after.
        f"install -D -m 600 {bundle}/secrets.env /etc/rackwatch/environment",
        f"rm -f {bundle}/secrets.env",
        f"install -D -m 640 {bundle}/rackwatch.toml /etc/rackwatch/rackwatch.toml",
    ]
    if seed.tls:
        steps.append(f"install -D -m 644 {bundle}/ca.crt /etc/rackwatch/ca.crt")
    steps.append(f"bash {bundle}/install.sh install --wheel {bundle}/{wheel_name} --model-manifest "
                 f"{bundle}/manifest.json >/var/log/rackwatch-install.log 2>&1")
    lines.append("runcmd:")
    lines += [f"- [sh, -c, {_q(step)}]" for step in steps]
    return "\n".join(lines) + "\n"


def _bundle_sources() -> dict[str, Path]:
    """The files of the project every seed carries in rackwatch/ (from a checkout of the project)."""
    files = {"install.sh": PROJECT_ROOT / "deploy" / "install.sh",
             "manifest.json": PROJECT_ROOT / "models" / "manifest.json"}
    for path in sorted((PROJECT_ROOT / "deploy" / "constraints").glob("*.txt")):
        files[f"constraints/{path.name}"] = path
    for path in sorted((PROJECT_ROOT / "systemd").glob("*.service")):
        files[f"systemd/{path.name}"] = path
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing or "constraints/bookworm.txt" not in files:
        raise ProvisionError(f"provision runs from a checkout of the rackwatch project (it copies deploy/install.sh, "
                             f"deploy/constraints/, systemd/ and models/manifest.json); missing: "
                             f"{', '.join(missing) or 'deploy/constraints/'}.")
    return files


def provision(csv_path: Path, out: Path, wheel: Path, ca: Path | None = None,
              now_ms: int | None = None) -> list[Path]:
    """Write one seed folder per rack of ``csv_path`` into ``out``; the folders written.

    Everything is checked first (the CSV, the wheel, the CA, that no rack's folder exists yet); the folders are
    written into a temporary folder beside ``out`` and moved into place only once all are complete.
    """
    seeds = read_racks(csv_path)
    wheel = Path(wheel)
    if not (wheel.is_file() and re.fullmatch(r"rackwatch-[^-]+-.+\.whl", wheel.name)):
        raise ProvisionError(f"{wheel} is not a rackwatch wheel (rackwatch-VERSION-...whl). Build one with "
                             "`python -m pip wheel --no-deps . -w dist` in the project. Nothing was written.")
    if any(seed.tls for seed in seeds) and not (ca and Path(ca).is_file()):
        raise ProvisionError("Some racks use an mqtts:// broker: give the gym's CA certificate with --ca FILE "
                             "(the one that signed the broker's certificate). Nothing was written.")
    bundle = _bundle_sources()
    out = Path(out)
    taken = [seed.rack_id for seed in seeds if (out / seed.rack_id).exists()]
    if taken:
        raise ProvisionError(f"{out} already holds seed folders for {', '.join(taken)}. Give an empty --out "
                             "folder, or delete those first. Nothing was written.")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".provision-", dir=out))
    try:
        for seed in seeds:
            folder = staging / seed.rack_id
            folder.mkdir()
            (folder / "meta-data").write_text(meta_data(seed, now_ms))
            (folder / "network-config").write_text(network_config(seed))
            (folder / "network-config").chmod(0o600)
            (folder / "user-data").write_text(user_data(seed, wheel.name))
            files = folder / "rackwatch"
            files.mkdir()
            for name, source in bundle.items():
                (files / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, files / name)
            shutil.copy2(wheel, files / wheel.name)
            if seed.tls:
                shutil.copy2(ca, files / "ca.crt")
            (files / "rackwatch.toml").write_text(rack_config(seed))
            secrets = files / "secrets.env"
            secrets.touch(mode=0o600)
            secrets.chmod(0o600)
            secrets.write_text(f"RACKWATCH_MQTT_PASSWORD={env_quote(seed.password)}\n")
        written = []
        for seed in seeds:
            (staging / seed.rack_id).rename(out / seed.rack_id)
            written.append(out / seed.rack_id)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
