"""The rack's MQTT link against a real Mosquitto: delivery, outages, kill -9, last will, ACLs, TLS, discovery.

Every JSON message a test subscriber sees is checked against the published contract (contract/*.schema.json).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import real_parts
from mqtt_broker import (REPO, TEST_USERS, MosquittoBroker, Subscriber, assert_contract, free_port,
                         sample_health, sample_rep, sample_set, sample_state, wait_until)
from rackwatch.discovery import discovery_configs
from rackwatch.mqtt import LinkSettings, RackLink
from rackwatch.outbox import Outbox

pytestmark = pytest.mark.broker


def settings_for(broker, tmp_path, rack="rack01", **overrides) -> LinkSettings:
    values = dict(rack=rack, host=broker.host, port=broker.port, state_dir=tmp_path / f"state-{rack}",
                  reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)
    values.update(overrides)
    return LinkSettings(**values)


def first_seen_order(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def test_events_arrive_on_their_topics_as_the_contract_says(broker, tmp_path):
    sub = Subscriber(broker, "rackwatch/#")
    link = RackLink(settings_for(broker, tmp_path)).start()
    try:
        sent = [sample_state("rack01"), sample_rep("rack01", 1), sample_rep("rack01", 2, load=False),
                sample_set("rack01"), sample_health("rack01"), sample_state(None, reps_in_set=2)]
        for event in sent:
            link.publish(event)
        assert link.wait_drained(10), "the broker did not acknowledge everything"
        sub.wait_for(lambda s: len(s.received("rackwatch/rack01/+")) >= len(sent) + 1, what="all events")

        assert sub.payloads("rackwatch/rack01/availability") == [b"online"]
        by_topic = {leaf: sub.events(f"rackwatch/rack01/{leaf}") for leaf in ("rep", "set", "state", "health")}
        assert [e["id"] for e in by_topic["rep"]] == [sent[1].id, sent[2].id]
        assert by_topic["set"][0] == sent[3].to_wire()
        assert by_topic["health"][0] == sent[4].to_wire()
        assert by_topic["state"][1]["rack"] == "rack01"      # an event without a rack gets the link's rack
        assert_contract(sub)

        # what a dashboard that connects later sees: the retained availability and state, and nothing else
        late = Subscriber(broker, "rackwatch/#", client_id="late")
        late.wait_for(lambda s: len(s.received()) >= 2, what="retained messages")
        time.sleep(0.3)
        assert {m.topic: (m.retain, m.payload) for m in late.received()} == {
            "rackwatch/rack01/availability": (True, b"online"),
            "rackwatch/rack01/state": (True, json.dumps(sent[5].for_rack("rack01").to_wire(),
                                                        separators=(",", ":")).encode()),
        }
        assert all(m.qos == 1 for m in late.received())
        late.close()
        with pytest.raises(ValueError, match="rack02"):
            link.publish(sample_rep("rack02"))
        with pytest.raises(ValueError, match="not dict"):   # only typed events go out, serialised here
            link.publish({"type": "selfie", "rack": "rack01", "id": "x"})
    finally:
        link.close()
        sub.close()
    assert sub.payloads("rackwatch/rack01/availability")[-1] == b"offline"   # close() says goodbye


def test_a_command_sent_the_moment_the_rack_says_connected_is_never_lost(broker, tmp_path):
    """Connected means subscribed: the broker has acknowledged (SUBACK) the subscription to the rack's commands.

    Each round is a rack the broker has never seen (no session to fall back on), and the dashboard sends a
    command the instant ``wait_connected`` returns. When connected was said before the SUBACK, one round in
    twenty or thirty lost its command on this machine, so 30 rounds failed most runs."""
    dashboard = Subscriber(broker, "rackwatch/+/reply", client_id="dashboard")
    links = []
    try:
        for round_ in range(30):
            rack = f"fresh{round_}"
            taken = threading.Event()
            link = RackLink(settings_for(broker, tmp_path, rack=rack), on_command=lambda command: taken.set())
            links.append(link)
            link.start()
            assert link.wait_connected(10)
            dashboard.client.publish(f"rackwatch/{rack}/cmd/identify", json.dumps({"id": f"c{round_}"}), qos=1)
            assert taken.wait(5), f"round {round_}: the command sent right after connecting never reached the rack"
        dashboard.wait_for(lambda s: len(s.events("rackwatch/+/reply")) >= 30, what="every reply")
        assert {e["command_id"] for e in dashboard.events("rackwatch/+/reply")} == {f"c{i}" for i in range(30)}
    finally:
        for link in links:
            link.close()
        dashboard.close()


def test_commands_are_carried_out_on_their_own_thread_one_at_a_time_in_order(broker, tmp_path):
    """A slow command (the settings' fsync, the frame loop's lock) must not hold up paho's network thread: the
    link keeps sending events while a command is being carried out."""
    release = threading.Event()
    seen: list[tuple[str, str]] = []

    def slow(command):
        seen.append((command.id, threading.current_thread().name))
        release.wait(10)

    dashboard = Subscriber(broker, ["rackwatch/rack01/reply", "rackwatch/rack01/rep"], client_id="dashboard")
    link = RackLink(settings_for(broker, tmp_path), on_command=slow).start()
    try:
        assert link.wait_connected(10)
        for n in range(3):
            dashboard.client.publish("rackwatch/rack01/cmd/identify", json.dumps({"id": f"c{n}"}), qos=1)
        wait_until(lambda: seen, what="the first command")
        rep = sample_rep("rack01")
        link.publish(rep)   # goes out while the command handler is still busy
        dashboard.wait_for(lambda s: s.events("rackwatch/rack01/rep"), what="the rep, during the slow command")
        assert len(seen) == 1 and dashboard.events("rackwatch/rack01/reply") == []
        release.set()
        dashboard.wait_for(lambda s: len(s.events("rackwatch/rack01/reply")) == 3, what="three replies")
        assert [command_id for command_id, _ in seen] == ["c0", "c1", "c2"]
        assert {thread for _, thread in seen} == {"rackwatch-commands-rack01"}
        assert [e["command_id"] for e in dashboard.events("rackwatch/rack01/reply")] == ["c0", "c1", "c2"]
    finally:
        release.set()
        link.close()
        dashboard.close()


def test_a_broker_outage_mid_stream_loses_nothing(broker, tmp_path):
    # A dashboard with a persistent session: the broker keeps its subscription across the restart.
    sub = Subscriber(broker, "rackwatch/rack01/rep", client_id="dashboard", persistent=True)
    link = RackLink(settings_for(broker, tmp_path)).start()
    sent: list[str] = []
    done = threading.Event()

    def lifter():   # a steady stream of reps, whatever the broker is doing
        for n in range(1, 151):
            event = sample_rep("rack01", n)
            link.publish(event)
            sent.append(event.id)
            time.sleep(0.01)
        done.set()

    thread = threading.Thread(target=lifter)
    try:
        assert link.wait_connected(10)
        thread.start()
        sub.wait_for(lambda s: len(s.received()) >= 20, what="the first reps")
        broker.stop()
        wait_until(lambda: not link.connected, what="the link to notice the outage")
        published_during_outage = len(sent)
        wait_until(lambda: len(sent) >= published_during_outage + 30, what="reps during the outage")
        wait_until(lambda: link.last_error, what="a failed reconnect attempt")   # the outage is felt, not just seen
        assert link.outbox_depth >= 30                       # every rep since the outage waits on disk
        broker.start()
        assert done.wait(30)
        assert link.wait_drained(30), f"outbox still holds {link.outbox_depth} events"
        sub.wait_for(lambda s: set(sent) <= {e["id"] for e in s.events()}, timeout=20, what="every rep")
    finally:
        thread.join(30)
        link.close()
        sub.close()

    received = sub.events()
    assert first_seen_order([e["id"] for e in received]) == sent     # nothing lost, in order
    copies: dict[str, dict] = {}
    for event in received:                                          # a duplicate is the very same event
        assert copies.setdefault(event["id"], event) == event
    assert_contract(sub)


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {edge!r}); sys.path.insert(0, {tests!r})
    from mqtt_broker import sample_rep, sample_state
    from rackwatch.mqtt import LinkSettings, RackLink
    mode, port, state_dir, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    link = RackLink(LinkSettings(rack="rack01", host="127.0.0.1", port=port, state_dir=state_dir,
                                 reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)).start()
    if mode == "publish":            # publish n reps, saying which ones publish() has accepted
        for i in range(1, n + 1):
            event = sample_rep("rack01", i)
            link.publish(event)
            print(event.id, flush=True)
            time.sleep(0.002)
        time.sleep(3600)
    elif mode == "state":            # publish one state, wait for its PUBACK, then idle until killed
        assert link.wait_connected(10)
        event = sample_state("rack01", reps_in_set=4)
        link.publish(event)
        assert link.wait_drained(10)
        print(event.id, flush=True)
        time.sleep(3600)
    elif mode == "drain":            # just start, deliver what the outbox holds, stop cleanly
        ok = link.wait_drained(30)
        link.close()
        print("drained" if ok else "NOT drained", flush=True)
""").format(edge=str(REPO / "edge"), tests=str(REPO / "tests"))


def run_child(tmp_path, *args) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE, text=True)


def read_lines(child: subprocess.Popen, count: int) -> list[str]:
    lines = []
    while len(lines) < count:
        line = child.stdout.readline()
        assert line, f"the child process ended early (exit code {child.poll()})"
        lines.append(line.strip())
    return lines


def kill9(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()


def test_events_queued_while_the_broker_is_down_survive_kill_9(tmp_path):
    broker = MosquittoBroker(tmp_path / "broker")       # configured, not yet running: the gym's broker is down
    state_dir = tmp_path / "state"
    child = run_child(tmp_path, "publish", broker.port, state_dir, 500)
    try:
        accepted = read_lines(child, 60)
    finally:
        kill9(child)
    with Outbox(state_dir) as box:
        waiting = [entry.event_id for entry in box]
    assert waiting[:60] == accepted                      # on disk, in order, despite kill -9

    with broker:
        sub = Subscriber(broker, "rackwatch/rack01/rep")
        try:
            drain(tmp_path, broker, state_dir)
            sub.wait_for(lambda s: set(waiting) <= {e["id"] for e in s.events()}, what="the replayed reps")
            assert first_seen_order([e["id"] for e in sub.events()]) == waiting
            assert_contract(sub)
        finally:
            sub.close()
    with Outbox(state_dir) as box:
        assert box.depth == 0


def test_a_rack_killed_while_sending_delivers_the_rest_after_restart(broker, tmp_path):
    """kill -9 with messages in flight: those the broker had not acknowledged yet are sent again at restart."""
    state_dir = tmp_path / "state"
    sub = Subscriber(broker, "rackwatch/rack01/rep")
    try:
        child = run_child(tmp_path, "publish", broker.port, state_dir, 2000)
        try:
            accepted = read_lines(child, 300)
        finally:
            kill9(child)
        drain(tmp_path, broker, state_dir)
        sub.wait_for(lambda s: set(accepted) <= {e["id"] for e in s.events()}, what="every accepted rep")
        seen = first_seen_order([e["id"] for e in sub.events()])
        assert [i for i in seen if i in set(accepted)] == accepted     # in order, none missing
        copies: dict[str, dict] = {}
        for event in sub.events():
            assert copies.setdefault(event["id"], event) == event       # a resent event is the same event
        assert_contract(sub)
    finally:
        sub.close()


def drain(tmp_path, broker, state_dir) -> None:
    """Start the rack again in a fresh process, let it deliver its outbox and stop cleanly."""
    child = run_child(tmp_path, "drain", broker.port, state_dir, 0)
    assert read_lines(child, 1) == ["drained"]
    child.wait(10)
    child.stdout.close()


def test_last_will_says_offline_and_a_restarted_rack_says_online_and_republishes_its_state(broker, tmp_path):
    sub = Subscriber(broker, ["rackwatch/rack01/availability", "rackwatch/rack01/state"])
    state_dir = tmp_path / "state"
    child = run_child(tmp_path, "state", broker.port, state_dir, 0)
    try:
        [state_id] = read_lines(child, 1)
        sub.wait_for(lambda s: b"online" in s.payloads("rackwatch/rack01/availability"), what="online")
    finally:
        kill9(child)                                     # no DISCONNECT: the broker must speak the will
    sub.wait_for(lambda s: s.payloads("rackwatch/rack01/availability")[-1:] == [b"offline"], what="last will")

    sub.clear()
    link = RackLink(settings_for(broker, tmp_path, state_dir=state_dir)).start()
    try:
        sub.wait_for(lambda s: len(s.received()) >= 2, what="online and the republished state")
        first, second = sub.received()[:2]
        assert (first.topic, first.payload) == ("rackwatch/rack01/availability", b"online")
        assert second.topic == "rackwatch/rack01/state" and json.loads(second.payload)["id"] == state_id
        assert_contract(sub)
    finally:
        link.close()
        sub.close()
    later = Subscriber(broker, "rackwatch/rack01/availability", client_id="later")
    later.wait_for(lambda s: s.received(), what="retained availability")
    assert later.payloads() == [b"offline"]              # a clean close leaves "offline" retained
    later.close()


def test_the_acl_confines_each_rack_to_its_own_subtree(secure_broker, tmp_path):
    b = secure_broker
    dashboard = Subscriber(b, "rackwatch/#", client_id="dash", username="dashboard", password=TEST_USERS["dashboard"])
    rack01 = RackLink(settings_for(b, tmp_path, username="rack01", password=TEST_USERS["rack01"])).start()
    # rack01's credentials, pretending to be rack02
    impostor = RackLink(settings_for(b, tmp_path, rack="rack02", username="rack01", password=TEST_USERS["rack01"],
                                     state_dir=tmp_path / "impostor")).start()   # its own folder: one per process
    snooper = Subscriber(b, "rackwatch/rack02/#", client_id="snoop", username="rack01",
                         password=TEST_USERS["rack01"])
    rack02_commands = []
    rack02 = RackLink(settings_for(b, tmp_path, rack="rack02", username="rack02", password=TEST_USERS["rack02"]),
                      on_command=rack02_commands.append)
    try:
        assert rack01.wait_connected(10) and impostor.wait_connected(10)
        forged = sample_rep("rack02")
        impostor.publish(forged)
        assert impostor.wait_drained(10)                 # the broker answered: not authorised
        assert impostor.refused == 1

        # the same connection then publishes where it may: once that arrives, the forged one would have too
        raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw01", protocol=mqtt.MQTTv5)
        raw.username_pw_set("rack01", TEST_USERS["rack01"])
        raw.connect(b.host, b.port)
        raw.loop_start()
        raw.publish("rackwatch/rack02/rep", b"{}", qos=1).wait_for_publish(5)
        raw.publish("rackwatch/rack01/marker", b"after", qos=1).wait_for_publish(5)
        own = sample_rep("rack01")
        rack01.publish(own)
        assert rack01.wait_drained(10) and rack01.refused == 0
        dashboard.wait_for(lambda s: s.payloads("rackwatch/rack01/marker") and
                           own.id in [e["id"] for e in s.events("rackwatch/rack01/rep")], what="rack01's messages")
        assert dashboard.received("rackwatch/rack02/#") == []

        # rack01 cannot read rack02's commands either; rack02 itself gets them
        rack02.start()
        assert rack02.wait_connected(10)
        dashboard.client.publish("rackwatch/rack02/cmd/identify", b'{"id": "find-me"}', qos=1)
        wait_until(lambda: rack02_commands, what="rack02 to get its command")
        dashboard.wait_for(lambda s: s.events("rackwatch/rack02/reply"), what="rack02's reply")
        assert dashboard.events("rackwatch/rack02/reply")[0]["status"] == "ok"
        assert snooper.received() == []
        assert_contract(dashboard)
        raw.disconnect()
        raw.loop_stop()
    finally:
        for link in (rack01, impostor, rack02):
            link.close()
        dashboard.close()
        snooper.close()


def test_wrong_credentials_are_reported_and_nothing_is_lost(secure_broker, tmp_path):
    link = RackLink(settings_for(secure_broker, tmp_path, username="rack01", password="wrong")).start()
    try:
        link.publish(sample_rep("rack01"))
        wait_until(lambda: link.last_error, what="a connection error")
        assert "refused" in link.last_error and "password" in link.last_error
        assert not link.connected and link.outbox_depth == 1
    finally:
        link.close()


def make_certificates(directory) -> dict:
    """A throwaway CA and a broker certificate for 127.0.0.1, made with the openssl command."""
    openssl = real_parts.openssl()   # missing: a failure under CI=true, a skip elsewhere
    d = directory
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=rackwatch test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}


def test_tls_with_the_gym_ca(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    with MosquittoBroker(tmp_path / "broker", tls=certs) as b:
        sub = Subscriber(b, "rackwatch/#")
        link = RackLink(settings_for(b, tmp_path, port=b.tls_port, tls_ca=str(certs["ca"]))).start()
        try:
            event = sample_rep("rack01")
            link.publish(event)
            assert link.wait_drained(10), link.last_error
            sub.wait_for(lambda s: s.events("rackwatch/rack01/rep"), what="the rep over TLS")
            assert sub.events("rackwatch/rack01/rep")[0]["id"] == event.id
            assert_contract(sub)
        finally:
            link.close()
            sub.close()


def test_home_assistant_discovery_makes_the_rack_a_device(broker, tmp_path):
    settings = settings_for(broker, tmp_path, ha_discovery=True)
    expected = {topic for topic, _ in discovery_configs(settings)}
    first = Subscriber(broker, "homeassistant/#", client_id="first")
    link = RackLink(settings).start()
    try:
        first.wait_for(lambda s: {m.topic for m in s.received()} >= expected, what="the discovery configs")
        first.close()
        ha = Subscriber(broker, "homeassistant/#", client_id="ha")   # joins later: gets the retained configs
        ha.wait_for(lambda s: {m.topic for m in s.received()} >= expected, what="the retained configs")
        assert all(m.retain for m in ha.received())
        for message in ha.received():
            config = json.loads(message.payload)
            assert config["device"]["identifiers"] == ["rackwatch_rack01"]
            assert config["availability_topic"] == "rackwatch/rack01/availability"
            assert config["state_topic"].startswith("rackwatch/rack01/")
            assert config["unique_id"].startswith("rackwatch_rack01_")
        assert len({json.loads(m.payload)["unique_id"] for m in ha.received()}) == len(expected)

        ha.clear()
        ha.client.publish("homeassistant/status", b"online", qos=1)        # Home Assistant restarted
        ha.wait_for(lambda s: {m.topic for m in s.received()} >= expected | {"homeassistant/status"},
                    what="the configs again")
        ha.close()
    finally:
        link.close()


def test_bench_publish_reports_throughput_and_outbox_cost(broker):
    from rackwatch.bench_mqtt import bench_publish

    result = bench_publish(100, broker.host, broker.port)
    assert result["acked"] == result["events"] == 200
    assert result["acked_per_s"] > 0 and result["outbox_ms_per_rep"] > 0 and result["outbox_ms_per_state"] > 0


def test_the_shipped_gym_broker_config_works_with_tls_passwords_and_the_acl(tmp_path):
    """deploy/mosquitto as an installer would set it up, only with the paths and ports of this test."""
    etc = tmp_path / "etc"
    certs = make_certificates(etc)
    (etc / "aclfile").write_text((REPO / "deploy/mosquitto/aclfile").read_text())
    for user, password in TEST_USERS.items():
        subprocess.run([real_parts.mosquitto_passwd(), "-b", *(["-c"] if user == "rack01" else []), str(etc / "passwd"),
                        user, password], check=True, capture_output=True)
    (etc / "passwd").chmod(0o600)
    local_port, tls_port = free_port(), free_port()
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    for old, new in (("/etc/mosquitto/rackwatch", str(etc)), ("/var/lib/mosquitto/", f"{tmp_path}/"),
                     ("listener 1883 127.0.0.1", f"listener {local_port} 127.0.0.1"),
                     ("listener 8883", f"listener {tls_port}"),
                     ("log_dest syslog", f"log_dest file {tmp_path}/mosquitto.log")):
        assert old in conf, f"the shipped config no longer has {old!r}"
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf = "user root\n" + conf
    with MosquittoBroker(tmp_path, port=local_port, config_text=conf) as b:
        link = RackLink(settings_for(b, tmp_path, port=tls_port, username="rack01", password=TEST_USERS["rack01"],
                                     tls_ca=str(certs["ca"]))).start()
        anonymous = RackLink(settings_for(b, tmp_path, rack="rack02", port=tls_port, tls_ca=str(certs["ca"])))
        try:
            link.publish(sample_rep("rack01"))
            assert link.wait_drained(10), link.last_error
            assert link.refused == 0
            anonymous.start()
            wait_until(lambda: anonymous.last_error, what="the anonymous rack to be refused")
            assert not anonymous.connected
        finally:
            link.close()
            anonymous.close()
