"""The gym broker as shipped in deploy/mosquitto, against a hostile neighbour; TLS failures that say what failed.

Every broker here is a real Mosquitto running the shipped ``mosquitto.conf`` and ``aclfile`` (only paths and ports
changed), with a password file made by ``mosquitto_passwd`` as the README says.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mqtt_broker import REPO, TEST_USERS, MosquittoBroker, Subscriber, free_port, wait_until
from rackwatch.config import ConfigError
from rackwatch.discovery import discovery_configs
from rackwatch.mqtt import LinkSettings, RackLink

pytestmark = pytest.mark.broker

USERS = {**TEST_USERS, "homeassistant": "ha-pass"}


def make_certificates(d: Path, *, san: str = "IP:127.0.0.1,DNS:localhost", cn: str = "rackwatch test CA") -> dict:
    """A CA and a broker certificate for ``san``, made with openssl as deploy/mosquitto/README.md says."""
    d.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", f"/CN={cn}")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=broker")
    (d / "san.cnf").write_text(f"subjectAltName={san}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}


class ShippedBroker(MosquittoBroker):
    """deploy/mosquitto/mosquitto.conf and aclfile as installed, with this test's paths and ports.

    ``without`` drops lines of the shipped config (to show what a line protects against)."""

    def __init__(self, tmp_path: Path, *, san: str = "IP:127.0.0.1,DNS:localhost", without: tuple[str, ...] = ()):
        etc = tmp_path / "etc"
        self.certs = make_certificates(etc, san=san)
        (etc / "aclfile").write_text((REPO / "deploy/mosquitto/aclfile").read_text())
        passwd = etc / "passwd"
        # As the README says: the file is made with mode 640 first, then the users are added to it.
        subprocess.run(["install", "-m", "640", "/dev/null", str(passwd)], check=True)
        for user, password in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
        assert stat.S_IMODE(passwd.stat().st_mode) == 0o640
        local_port, self.shipped_tls_port = free_port(), free_port()
        conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
        for old, new in (("/etc/mosquitto/rackwatch", str(etc)), ("/var/lib/mosquitto/", f"{tmp_path}/"),
                         ("listener 1883 127.0.0.1", f"listener {local_port} 127.0.0.1"),
                         ("listener 8883", f"listener {self.shipped_tls_port}"),
                         ("log_dest syslog", f"log_dest file {tmp_path}/mosquitto.log"),
                         ("log_type notice", "log_type all"), *((line, "") for line in without)):
            assert old in conf, f"the shipped config no longer has {old!r}"
            conf = conf.replace(old, new)
        if os.geteuid() == 0:
            conf = "user root\n" + conf
        super().__init__(tmp_path, port=local_port, config_text=conf)

    def settings(self, tmp_path: Path, rack: str = "rack01", **overrides) -> LinkSettings:
        values = dict(rack=rack, host="127.0.0.1", port=self.shipped_tls_port, username=rack,
                      password=USERS.get(rack), tls_ca=str(self.certs["ca"]), state_dir=tmp_path / f"state-{rack}",
                      reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)
        values.update(overrides)
        return LinkSettings(**values)


def raw_client(broker: ShippedBroker, user: str, client_id: str) -> tuple[mqtt.Client, threading.Event]:
    """A plain client over the shipped TLS listener; returns it connected, and an event set when it is thrown off."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, USERS[user])
    client.tls_set(ca_certs=str(broker.certs["ca"]))
    connected, dropped = threading.Event(), threading.Event()
    client.on_connect = lambda c, u, f, rc, p: rc.is_failure or connected.set()
    client.on_disconnect = lambda *a: dropped.set()
    client.connect("127.0.0.1", broker.shipped_tls_port)
    client.loop_start()
    assert connected.wait(10), f"{user} could not connect"
    return client, dropped


def takeover(tmp_path: Path, **broker_options) -> tuple[bool, Subscriber | None, RackLink]:
    """rack01 connects; then the dashboard's user connects with rack01's client id and publishes a marker.

    Returns whether rack01 was thrown off by then (its link saw the broker go), and what a watcher saw."""
    with ShippedBroker(tmp_path / "b", **broker_options) as b:
        link = RackLink(b.settings(tmp_path)).start()
        try:
            assert link.wait_connected(10), link.last_error
            watcher, _ = raw_client(b, "homeassistant", "watcher")
            seen = []
            watcher.on_message = lambda c, u, m: seen.append((m.topic, m.payload))
            watcher.subscribe("rackwatch/#", qos=1)
            wait_until(lambda: ("rackwatch/rack01/availability", b"online") in seen, what="rack01 online")
            thrown_off = threading.Event()
            on_disconnect = link._client.on_disconnect                 # the link's own handler still runs

            def spy(*args):
                thrown_off.set()
                on_disconnect(*args)

            link._client.on_disconnect = spy
            intruder, _ = raw_client(b, "dashboard", link.settings.client_id)     # "rackwatch-rack01"
            # Once the intruder's own message arrives, the broker has long handled its CONNECT (one connection is
            # handled in order), so a takeover would have happened already.
            intruder.publish("rackwatch/rack01/cmd/identify", b'{"id": "from-the-intruder"}', qos=1).wait_for_publish(5)
            wait_until(lambda: any(p == b'{"id": "from-the-intruder"}' for _, p in seen), what="the marker")
            kicked = thrown_off.is_set() or ("rackwatch/rack01/availability", b"offline") in seen
            for client in (intruder, watcher):
                client.disconnect()
                client.loop_stop()
            return kicked, b.log(), link
        finally:
            link.close()


def test_another_user_cannot_take_a_racks_client_id_and_throw_it_off(tmp_path):
    kicked, log, _ = takeover(tmp_path / "shipped")
    assert not kicked, log
    assert "already connected, closing old connection" not in log
    # The line that protects it: without it, the same intruder throws rack01 off (the test would notice).
    kicked, log, _ = takeover(tmp_path / "without", without=("use_username_as_clientid true",))
    assert kicked and "already connected, closing old connection" in log


def test_under_the_shipped_config_a_rack_keeps_its_persistent_session_and_its_last_will(tmp_path):
    with ShippedBroker(tmp_path / "b") as b:
        commands = []
        settings = b.settings(tmp_path)
        link = RackLink(settings, on_command=commands.append).start()
        assert link.wait_connected(10)
        link.close()                                   # away for a while ...
        dashboard, _ = raw_client(b, "dashboard", "dashboard")
        dashboard.publish("rackwatch/rack01/cmd/identify", b'{"id": "while-away"}', qos=1).wait_for_publish(5)
        link = RackLink(settings, on_command=commands.append).start()
        try:                                           # ... the command waited in its session (kept per username)
            wait_until(lambda: [c.id for c in commands] == ["while-away"], what="the command queued while away")
        finally:
            link.close()

        # The last will: a rack killed mid-work is announced offline by the broker.
        watcher = Subscriber(b, "rackwatch/rack01/availability", client_id="w", username="dashboard",
                             password=USERS["dashboard"])
        script = textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO / 'edge')!r})
            from rackwatch.mqtt import LinkSettings, RackLink
            link = RackLink(LinkSettings(rack="rack01", host="127.0.0.1", port={b.shipped_tls_port},
                            username="rack01", password={USERS['rack01']!r}, tls_ca={str(b.certs['ca'])!r},
                            state_dir={str(tmp_path / 'child')!r}, ha_discovery=False)).start()
            assert link.wait_connected(10)
            print("up", flush=True)
            time.sleep(60)
        """)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "up"
            watcher.wait_for(lambda s: s.payloads()[-1:] == [b"online"], what="online")
            os.kill(child.pid, signal.SIGKILL)
            watcher.wait_for(lambda s: s.payloads()[-1:] == [b"offline"], what="the last will")
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
            watcher.close()
        dashboard.disconnect()
        dashboard.loop_stop()


def test_a_rack_announces_sensors_to_home_assistant_but_nothing_else(tmp_path):
    with ShippedBroker(tmp_path / "b") as b:
        settings = b.settings(tmp_path, ha_discovery=True)
        ha = Subscriber(b, "homeassistant/#", client_id="ha", username="homeassistant", password=USERS["homeassistant"])
        link = RackLink(settings).start()
        try:
            expected = {topic for topic, _ in discovery_configs(settings)}
            ha.wait_for(lambda s: {m.topic for m in s.received()} >= expected, what="the rack's sensors")
            rack, _ = raw_client(b, "rack01", "rack01-tool")
            for component in ("switch", "lock", "sensor"):
                rack.publish(f"homeassistant/{component}/rack01/x/config", b"{}", qos=1).wait_for_publish(5)
            ha.wait_for(lambda s: "homeassistant/sensor/rack01/x/config" in {m.topic for m in s.received()},
                        what="the allowed one")
            topics = {m.topic for m in ha.received()}
            assert "homeassistant/switch/rack01/x/config" not in topics
            assert "homeassistant/lock/rack01/x/config" not in topics
            rack.disconnect()
            rack.loop_stop()
        finally:
            link.close()
            ha.close()


# -- TLS failures say what failed -------------------------------------------------------------------------------------

def test_a_missing_or_wrong_tls_ca_file_is_named_with_what_to_do(tmp_path):
    missing = tmp_path / "nowhere" / "ca.crt"
    with pytest.raises(ConfigError, match=f"tls_ca = '{missing}': that file does not exist.*copy it there"):
        RackLink(LinkSettings(rack="rack01", tls_ca=str(missing), state_dir=tmp_path / "s1"))
    not_a_cert = tmp_path / "notes.txt"
    not_a_cert.write_text("hello\n")
    with pytest.raises(ConfigError, match="holds no usable certificate.*BEGIN CERTIFICATE"):
        RackLink(LinkSettings(rack="rack01", tls_ca=str(not_a_cert), state_dir=tmp_path / "s2"))
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        RackLink(LinkSettings(rack="rack01", tls_ca=str(tmp_path), state_dir=tmp_path / "s3"))

    # and `rackwatch run` says it in one paragraph, exit status 2
    config = tmp_path / "rackwatch.toml"
    config.write_text(f'[mqtt]\ntls_ca = "{missing}"\n')
    done = subprocess.run([sys.executable, "-m", "rackwatch.cli", "--config", str(config), "run", "--source",
                           str(tmp_path / "none.mp4"), "--broker", "mqtts://127.0.0.1:8883", "--state-dir",
                           str(tmp_path / "state")], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"tls_ca = '{missing}': that file does not exist" in done.stderr


@pytest.mark.parametrize("case, words", [
    ("another CA", "was not signed by the CA in tls_ca"),
    ("hostname", "is not made out to"),
    ("plain port", "handshake"),
])
def test_tls_failures_say_what_failed(tmp_path, case, words):
    san = "DNS:broker.gym.lan" if case == "hostname" else "IP:127.0.0.1,DNS:localhost"
    with ShippedBroker(tmp_path / "b", san=san) as b:
        overrides = {}
        if case == "another CA":
            overrides["tls_ca"] = str(make_certificates(tmp_path / "other", cn="someone else's CA")["ca"])
        if case == "plain port":
            overrides["port"] = b.port            # the plain listener: no TLS there
        link = RackLink(b.settings(tmp_path, **overrides)).start()
        try:
            wait_until(lambda: link.last_error, what="the connection to fail")
            assert words in link.last_error, link.last_error
            assert not link.connected
            if case == "another CA":
                assert overrides["tls_ca"] in link.last_error
        finally:
            link.close()
