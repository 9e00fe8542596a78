"""The ingester against a real Mosquitto and a real rack link: nothing lost or stored twice across a broker restart,
broken messages kept aside without stopping it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from mqtt_broker import MosquittoBroker, wait_until
from dashboard_parts import DashboardProcess, store, store_url  # noqa: F401  (fixtures)
from rackwatch.dashboard import samples
from rackwatch.dashboard.alerts import AlertRules
from rackwatch.dashboard.board import Board
from rackwatch.dashboard.ingest import Ingester
from rackwatch.events import parse_event

pytestmark = pytest.mark.broker


class RunningIngester:
    """The dashboard's ingester on its own event loop in a thread, as in the dashboard process."""

    def __init__(self, store, broker, client_id: str = "test-dashboard", share: str | None = None):
        self.board = Board(AlertRules())
        self.ingester = Ingester(store, self.board, broker.host, broker.port, client_id=client_id, share=share)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        wait_until(self.ingester.connected.is_set, timeout=15, what="the ingester connecting")

    async def _start(self) -> asyncio.Task:
        return asyncio.create_task(self.ingester.run())

    async def _cancel(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cancel(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def assert_each_stored_once(store, published: list[str]) -> None:
    """Every rep published is stored, and none twice (by id, and as a row of the reps' table)."""
    assert sorted(store.event_ids("rep")) == sorted(published)
    assert len(store.reps()) == len(published)


def publish_reps_through_an_outage(link, rack: str, count: int, broker, *, down_at: int, up_after: int,
                                   noticed_by: list[RunningIngester]) -> list[str]:
    """Publish ``count`` reps from a rack link; the broker stops before rep ``down_at`` (once the ingesters have
    noticed, the next reps wait in the rack's outbox) and starts again after rep ``up_after``. Returns their ids."""
    published = []
    for n in range(1, count + 1):
        if n == down_at:
            broker.stop()
            wait_until(lambda: not any(r.ingester.connected.is_set() for r in noticed_by),
                       what="the ingesters to notice the broker gone")
        event = samples.rep(rack, f"set-{n // 10}", n % 10 + 1, "clean")
        link.publish(parse_event(event))
        published.append(event["id"])
        if n == up_after:
            broker.start()
    return published


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(store, tmp_path):
    from rackwatch.mqtt import LinkSettings, RackLink

    with MosquittoBroker(tmp_path / "broker") as broker:
        running = RunningIngester(store, broker)
        link = RackLink(LinkSettings(rack="rack01", host=broker.host, port=broker.port,
                                     state_dir=tmp_path / "rack01", reconnect_min_s=1, reconnect_max_s=1,
                                     ha_discovery=False)).start()
        try:
            assert link.wait_connected(15)
            # Mid-stream: some reps are in flight to the dashboard, the rest wait.
            published = publish_reps_through_an_outage(link, "rack01", 300, broker, down_at=151, up_after=200,
                                                       noticed_by=[running])
            assert link.wait_drained(60), "the rack did not get its outbox out"
            wait_until(lambda: len(store.event_ids("rep")) >= len(published), timeout=60,
                       what="every rep stored")
        finally:
            link.close()
            running.stop()
    assert_each_stored_once(store, published)


def alive(pid: int) -> bool:
    """The process runs (a zombie, ended but not yet reaped by its new parent, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_dashboard_killed_before_its_batch_is_committed_gets_those_events_again(tmp_path):
    """``rackwatch dashboard`` as a child process: 100 reps stored; then the database is held (a write
    transaction of the test's own: the dashboard's batch waits for it) while 200 more reach the dashboard, which is
    killed (SIGKILL) before it could commit them. Started again on the same session, it gets them from the broker
    (acknowledged only once stored): all 300 stored, each id once."""
    import sqlite3

    import paho.mqtt.client as mqtt

    from rackwatch.dashboard.store import Store

    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    db_path = tmp_path / "dashboard.db"
    db = f"sqlite:///{db_path}"
    reader = Store(db)
    reader.migrate()
    with MosquittoBroker(tmp_path / "broker") as broker:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-racks", protocol=mqtt.MQTTv5)
        client.connect(broker.host, broker.port)
        client.loop_start()
        dashboard = DashboardProcess(tmp_path / "first", db, broker)
        published: list[str] = []

        def publish(first: int, last: int) -> None:
            for n in range(first, last + 1):
                event = samples.rep(f"rack{n % 3}", f"set-{n // 10}", n % 10 + 1, "clean")
                client.publish(f"rackwatch/{event['rack']}/rep", json.dumps(event), qos=1).wait_for_publish(10)
                published.append(event["id"])

        def sent_to_dashboard() -> int:   # PUBLISH packets the broker sent the dashboard ("log_type all")
            return broker.log_path.read_text(errors="replace").count(
                "Sending PUBLISH to rackwatch-dashboard-main-0")

        held = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        try:
            publish(1, 100)
            wait_until(lambda: len(reader.event_ids("rep")) == 100, timeout=20, what="the first 100 reps stored")
            held.execute("BEGIN IMMEDIATE")      # the database's write lock: the dashboard's next commit waits
            publish(101, 300)
            wait_until(lambda: sent_to_dashboard() >= 300, timeout=20, what="the 200 reps sent to the dashboard")
            children = [int(pid) for task in Path(f"/proc/{dashboard.process.pid}/task").iterdir()
                        for pid in (task / "children").read_text().split()]
            assert children, "the dashboard has no ingesting process"
            dashboard.process.kill()             # SIGKILL, its batch not committed
            dashboard.process.wait(10)
            # Its ingesting process ends with it (it would otherwise go on storing and acknowledging).
            wait_until(lambda: not any(alive(pid) for pid in children), timeout=10,
                       what="the killed dashboard's child processes to end")
            assert len(reader.event_ids("rep")) == 100, "the dashboard committed while the test held the lock"
            held.execute("ROLLBACK")
            dashboard.stop()
            dashboard = DashboardProcess(tmp_path / "second", db, broker)
            wait_until(lambda: len(reader.event_ids("rep")) >= 300, timeout=30,
                       what="the 200 reps the killed dashboard had not stored, redelivered and stored")
        finally:
            held.close()
            dashboard.stop()
            client.loop_stop()
            client.disconnect()
    assert_each_stored_once(reader, published)
    reader.close()


def test_the_board_shows_a_rep_while_the_database_is_still_writing(tmp_path):
    """``rackwatch dashboard`` as staff run it: the database is held by a write transaction of the test's own (a
    slow disk, a long commit), and a rack publishes a rep. The rep reaches a browser's stream, its tile changed,
    while the rep is not yet stored; once the database is free it is stored too."""
    import sqlite3

    import httpx
    import paho.mqtt.publish as publish

    from rackwatch.dashboard.store import Store

    db_path = tmp_path / "dashboard.db"
    db = f"sqlite:///{db_path}"
    reader = Store(db)
    reader.migrate()
    with MosquittoBroker(tmp_path / "broker") as broker, DashboardProcess(tmp_path, db, broker) as dashboard:
        seen: list[str] = []
        streaming = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=dashboard.url, timeout=30) as client:
                token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
                client.post("/login", data={"name": "sam", "password": "sam-password", "csrf_token": token})
                try:
                    with client.stream("GET", "/stream") as stream:
                        streaming.set()
                        for line in stream.iter_lines():
                            if line.startswith("data: "):
                                seen.extend(tile["event"] for tile in json.loads(line[6:]).get("tiles", ()))
                except httpx.RemoteProtocolError:
                    pass   # the dashboard stopped at the end of the test

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wait_until(streaming.is_set, timeout=15, what="the board's stream opening")
        held = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        try:
            held.execute("BEGIN IMMEDIATE")      # the database's write lock: the dashboard's next commit waits
            rep = samples.rep("rack07", "set-1", 1, "cave")
            publish.single("rackwatch/rack07/rep", json.dumps(rep), qos=1, hostname=broker.host, port=broker.port,
                           protocol=5)
            wait_until(lambda: rep["id"] in seen, timeout=15, what="the rep's tile on the board's stream")
            assert rep["id"] not in reader.event_ids("rep"), "stored already: the test's lock did not hold"
            held.execute("ROLLBACK")
            wait_until(lambda: rep["id"] in reader.event_ids("rep"), timeout=15, what="the rep stored")
        finally:
            held.close()
    reader.close()


def test_on_the_gym_broker_as_shipped_the_dashboard_stores_and_shows_without_throwing_itself_off(tmp_path):
    """The shipped broker makes every client id its username, so two connections with one username throw each
    other off. The dashboard has two (the storing process's, the live board's): it logs in as ``dashboard`` and
    ``dashboard-live`` (the same password), both stay connected, and rack01's rep is stored and shown."""
    import httpx
    import paho.mqtt.publish as publish

    from rackwatch.dashboard.store import Store
    from test_broker_security import USERS, ShippedBroker

    db = f"sqlite:///{tmp_path / 'dashboard.db'}"
    reader = Store(db)
    reader.migrate()
    with ShippedBroker(tmp_path / "broker") as broker, \
            DashboardProcess(tmp_path, db, broker, "--username", "dashboard",
                             env={"RACKWATCH_DASHBOARD_MQTT_PASSWORD": USERS["dashboard"]}) as dashboard:
        rep = samples.rep("rack01", "set-1", 1, "clean")
        with httpx.Client(base_url=dashboard.url, timeout=30) as client:
            token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/login", data={"name": "sam", "password": "sam-password", "csrf_token": token})
            with client.stream("GET", "/stream") as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("event: tiles")        # the whole board, first
                publish.single("rackwatch/rack01/rep", json.dumps(rep), qos=1, hostname=broker.host,
                               port=broker.port, protocol=5, client_id="rack01",
                               auth={"username": "rack01", "password": USERS["rack01"]})
                deadline = time.monotonic() + 20
                for line in lines:          # a ping every 15 s at the latest: the deadline is looked at
                    if line.startswith("data: ") and rep["id"] in line:
                        break
                    assert time.monotonic() < deadline, "the rep never reached the board's stream"
        wait_until(lambda: rep["id"] in reader.event_ids("rep"), timeout=15, what="the rep stored")
        log = broker.log_path.read_text(errors="replace")
        assert "Client dashboard already connected" not in log and "Client dashboard-live already connected" \
            not in log, "the dashboard's two connections threw each other off"
        assert "dashboard-live" in log
    reader.close()


def test_broken_messages_are_kept_aside_and_the_ingester_goes_on(store, tmp_path):
    import paho.mqtt.publish as publish

    with MosquittoBroker(tmp_path / "broker") as broker:
        running = RunningIngester(store, broker)
        try:
            good = samples.rep("rack02", "s1", 1, "cave", load_kg=100, one_rm_kg=140)
            wrong = dict(good, id="other", depth="deep")
            for topic, payload in (("rackwatch/rack02/rep", b"\x00\xffgarbage"),
                                   ("rackwatch/rack02/rep", json.dumps(wrong)),
                                   ("rackwatch/rack02/availability", b"online"),
                                   ("rackwatch/rack02/rep", json.dumps(good))):
                publish.single(topic, payload, qos=1, hostname=broker.host, port=broker.port)
            wait_until(lambda: store.event_ids("rep") == [good["id"]], what="the good rep stored")
            wait_until(lambda: store.invalid_messages()[0] == 2, what="the two broken reps kept aside")
            assert running.ingester.connected.is_set()
            assert store.rack("rack02")["online"] is True
            assert [a.kind for a in store.alerts()] == ["cave_at_working_load"]
        finally:
            running.stop()


def test_two_dashboard_processes_share_the_ingestion_and_store_each_event_once(store_url, tmp_path):
    """MQTT 5 shared subscription ($share/dash/...): the broker splits the messages between two ingesters with
    their own connections and stores, on one database; every event is stored once."""
    import paho.mqtt.client as mqtt

    from rackwatch.dashboard.store import Store

    first, second = Store(store_url), Store(store_url)
    first.migrate()
    with MosquittoBroker(tmp_path / "broker") as broker:
        a = RunningIngester(first, broker, client_id="dash-a", share="dash")
        b = RunningIngester(second, broker, client_id="dash-b", share="dash")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-racks", protocol=mqtt.MQTTv5)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            published = []
            for n in range(200):
                event = samples.rep(f"rack{n % 4}", f"set-{n // 20}", n % 20 + 1, "clean")
                client.publish(f"rackwatch/{event['rack']}/rep", json.dumps(event), qos=1).wait_for_publish(10)
                published.append(event["id"])
            wait_until(lambda: len(first.event_ids("rep")) >= len(published), timeout=30, what="every rep stored")
            assert a.ingester.received > 0 and b.ingester.received > 0          # the broker shared the work
            assert a.ingester.received + b.ingester.received == len(published)  # each message went to one
        finally:
            client.loop_stop()
            client.disconnect()
            a.stop()
            b.stop()
    assert sorted(first.event_ids("rep")) == sorted(published)
    first.close()
    second.close()


def bridged_brokers(tmp_path) -> tuple[MosquittoBroker, MosquittoBroker]:
    """A central Mosquitto, and a gym's Mosquitto bridging to it as docs/dashboard.md shows: the racks' topics out,
    their commands in, QoS 1, MQTT 5, a persistent bridge session (what the central misses waits in the gym)."""
    central = MosquittoBroker(tmp_path / "central")
    gym = MosquittoBroker(tmp_path / "gym")
    gym.config_path.write_text(gym.config_path.read_text() + "\n".join([
        "connection central", f"address {central.host}:{central.port}", "bridge_protocol_version mqttv50",
        "cleansession false", "local_clientid bridge-gym01-local", "remote_clientid bridge-gym01",
        "restart_timeout 1 2", "topic rackwatch/# out 1", "topic rackwatch/+/cmd/# in 1", ""]))
    return gym, central


def test_racks_at_a_gym_bridged_to_a_central_broker_reach_two_dashboards_and_each_event_is_stored_once(
        store_url, tmp_path):
    """racks → the gym's Mosquitto → bridge → the central Mosquitto (restarted mid-stream) → two ingesters sharing
    ``$share/dash/...``, each with its own store on one database: every rep stored once, the rack online on both
    processes' boards, and a command sent on the central broker reaches the gym's once."""
    import paho.mqtt.client as mqtt

    from rackwatch.dashboard.store import Store
    from rackwatch.mqtt import LinkSettings, RackLink

    first, second = Store(store_url), Store(store_url)
    first.migrate()
    gym, central = bridged_brokers(tmp_path)
    with central, gym:
        a = RunningIngester(first, central, client_id="dash-a", share="dash")
        b = RunningIngester(second, central, client_id="dash-b", share="dash")
        link = RackLink(LinkSettings(rack="gym01-rack01", host=gym.host, port=gym.port,
                                     state_dir=tmp_path / "rack", reconnect_min_s=1, reconnect_max_s=1,
                                     ha_discovery=False)).start()
        commands: list[bytes] = []
        at_gym = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-gym-cmd", protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        at_gym.on_subscribe = lambda *args: subscribed.set()
        at_gym.on_message = lambda client, userdata, message: commands.append(message.payload)
        at_gym.connect(gym.host, gym.port)
        at_gym.subscribe("rackwatch/+/cmd/#", qos=1)
        at_gym.loop_start()
        try:
            assert link.wait_connected(15) and subscribed.wait(10)
            wait_until(lambda: first.rack("gym01-rack01") is not None and first.rack("gym01-rack01")["online"],
                       timeout=15, what="the rack's availability bridged to the central and stored")
            # The link between gym and centre goes down: the gym keeps the reps.
            published = publish_reps_through_an_outage(link, "gym01-rack01", 200, central, down_at=101,
                                                       up_after=150, noticed_by=[a, b])
            assert link.wait_drained(30), "the rack did not get its outbox out to the gym's broker"
            wait_until(lambda: len(first.event_ids("rep")) >= len(published), timeout=60,
                       what="every rep bridged and stored")
            assert a.ingester.received > 0 and b.ingester.received > 0      # both processes took a share
            for running in (a, b):   # each board knows the rack (retained availability, subscribed unshared)
                assert running.board.snapshots["gym01-rack01"]["online"] is True

            wait_until(lambda: a.ingester.connected.is_set(), what="the ingester back on the central")
            command = {"id": "dash-cmd-1", "value": 80.0, "units": "kg"}
            asyncio.run_coroutine_threadsafe(a.ingester.publish("rackwatch/gym01-rack01/cmd/load", command),
                                             a.loop).result(10)
            wait_until(lambda: commands, what="the command bridged in to the gym")
        finally:
            at_gym.loop_stop()
            at_gym.disconnect()
            link.close()
            a.stop()
            b.stop()
    assert_each_stored_once(first, published)
    assert [json.loads(c) for c in commands] == [command]    # once: not echoed back out by the bridge
    first.close()
    second.close()
