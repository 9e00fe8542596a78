"""The rack's MQTT link: events out (durably, in order), commands in, availability and Home Assistant discovery.

How an event travels::

    RackLink.publish(event) ─► Outbox (SQLite, fsynced) ─► pump thread ─► paho ─► broker
                                    ▲                                             │
                                    └──────── row deleted on PUBACK ◄─────────────┘

``publish`` returns as soon as the event is on disk. A *pump* thread sends the waiting rows in order whenever
the link is connected, keeping at most :attr:`LinkSettings.window` unacknowledged at a time, and deletes each
row when paho reports the broker's PUBACK (``on_publish``). Nothing is lost when the broker is away, the network
drops or the process is killed: the rows stay on disk and are sent again on the next connection. The price is
that a consumer may see an event twice (same ``id``) -- QoS 1 is at-least-once anyway.

Why the outbox, not paho, owns retries: paho keeps unacknowledged messages in memory and resends them after a
reconnect, but only in memory. We drop paho's copies on every (re)connect and let the pump resend from disk in
``seq`` order, so there is one source of truth and the order is the order of the outbox.

All paho callbacks run on paho's network thread (``loop_start``). They only record what happened on a queue
that the pump thread works through; the pump is the only thread that talks to the outbox for sending, so there
are no races between "sent", "acknowledged" and "connection lost".

Topics (``<root>`` defaults to ``rackwatch``; see docs/mqtt.md and contract/asyncapi.yaml):

=============================== ======== ==== ==========================================================
topic                           retained QoS  payload
=============================== ======== ==== ==========================================================
``<root>/<rack>/availability``  yes      1    ``online`` / ``offline`` (``offline`` is also the last will)
``<root>/<rack>/state``         yes      1    state event (republished on every reconnect)
``<root>/<rack>/rep``           no       1    rep event
``<root>/<rack>/set``           no       1    set summary event
``<root>/<rack>/health``        no       0    health event
``<root>/<rack>/cmd/<name>``    no       1    a command to the rack (see :mod:`rackwatch.commands`)
``<root>/<rack>/reply``         no       1    the reply to a command
=============================== ======== ==== ==========================================================
"""

from __future__ import annotations

import json
import logging
import queue
import re
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from . import commands as cmds
from .config import ConfigError
from .outbox import DEFAULT_MAX_EVENTS, Outbox

log = logging.getLogger(__name__)

# A rack id is one topic level and a Mosquitto username: no wildcards, no slashes, nothing exotic.
RACK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# event type -> (topic leaf, QoS, retained)
ROUTES = {
    "rep": ("rep", 1, False),
    "set": ("set", 1, False),
    "state": ("state", 1, True),
    "health": ("health", 0, False),
    "reply": ("reply", 1, False),
}


@dataclass
class LinkSettings:
    """Everything the link needs to know; usually read from the rack's config file by the service."""

    rack: str
    host: str = "localhost"
    port: int = 1883
    topic_root: str = "rackwatch"
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None         # CA certificate that signed the broker's certificate: turns TLS on
    tls_cert: str | None = None       # client certificate and key, if the broker wants them
    tls_key: str | None = None
    keepalive: int = 30
    state_dir: Path = Path("/var/lib/rackwatch")
    outbox_max: int = DEFAULT_MAX_EVENTS
    session_expiry_s: int = 3600      # how long the broker keeps commands for us while we are away
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    window: int = 32                  # unacknowledged messages in flight at most
    ha_discovery: bool = True
    ha_prefix: str = "homeassistant"

    def __post_init__(self) -> None:
        if not RACK_ID.fullmatch(self.rack or ""):
            raise ValueError(f"rack id {self.rack!r} is not usable: use 1-64 letters, digits, '-' or '_' "
                             "(it becomes an MQTT topic level and the rack's broker username)")
        if not self.topic_root or any(c in self.topic_root for c in "+#") or self.topic_root.strip("/") != \
                self.topic_root:
            raise ValueError(f"topic root {self.topic_root!r} is not usable: no '+', '#' or leading/trailing '/'")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key (the rack's client certificate and its key), or neither")
        if (self.tls_cert or self.tls_key) and not self.tls_ca:
            raise ValueError("tls_cert/tls_key need tls_ca too (the CA that signed the broker's certificate)")
        self.state_dir = Path(self.state_dir)

    @property
    def client_id(self) -> str:
        return f"rackwatch-{self.rack}"


@dataclass(frozen=True)
class Topics:
    """The topic names of one rack."""

    root: str
    rack: str

    @property
    def base(self) -> str:
        return f"{self.root}/{self.rack}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    @property
    def commands(self) -> str:
        """The subscription filter for every command to this rack."""
        return f"{self.base}/cmd/+"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def for_event(self, kind: str) -> tuple[str, int, bool]:
        """(topic, QoS, retain) for an event type."""
        try:
            leaf, qos, retain = ROUTES[kind]
        except KeyError:
            raise ValueError(f"no MQTT topic for events of type {kind!r}; known: {', '.join(ROUTES)}") from None
        return f"{self.base}/{leaf}", qos, retain


CommandHandler = Callable[[cmds.Command], None]


class RackLink:
    """One rack's connection to the broker. Start it, ``publish`` events, ``close`` it.

    ``on_command`` is called (on paho's thread, so keep it short) with each valid :class:`rackwatch.commands.Command`.
    It returns nothing to accept the command, or raises :class:`rackwatch.commands.CommandRejected` with a reason
    to refuse it (e.g. a load above the bar's capacity). Either way a reply goes out on ``<root>/<rack>/reply``.
    """

    def __init__(self, settings: LinkSettings, on_command: CommandHandler | None = None, *,
                 outbox: Outbox | None = None):
        self.settings = settings
        self.topics = Topics(settings.topic_root, settings.rack)
        self._owns_outbox = outbox is None
        self.outbox = outbox if outbox is not None else Outbox(settings.state_dir, max_events=settings.outbox_max)
        self.on_command = on_command
        self.last_error: str | None = None   # the latest connection problem, in words; None once connected
        self._connected = threading.Event()
        self._events: queue.Queue[tuple] = queue.Queue()   # what paho saw, for the pump, in order
        self._recent_replies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._stopping = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._acked = threading.Condition()
        self._acked_upto = 0   # the highest outbox seq the broker has acknowledged
        self.pump_failures = 0               # times sending from the outbox failed (each is logged)
        self.pump_error: str | None = None   # the latest failure, in words; None once sending works again
        self._client = self._make_client()

    # -- set-up --------------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls_ca:
            check_tls_files(s)
            client.tls_set(ca_certs=s.tls_ca, certfile=s.tls_cert, keyfile=s.tls_key,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        # If the connection dies without a DISCONNECT (power cut, cable, kill -9) the broker says it for us.
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        client.max_inflight_messages_set(s.window)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> "RackLink":
        """Connect in the background (retrying with backoff until the broker answers) and start sending."""
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        # clean_start=False: a persistent session, so commands sent while we were away are kept for us.
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive, clean_start=False, properties=props)
        self._client.loop_start()
        self._pump_thread = threading.Thread(target=self._pump, name=f"rackwatch-outbox-{s.rack}", daemon=True)
        self._pump_thread.start()
        return self

    def __enter__(self) -> "RackLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the public surface --------------------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> int:
        """Queue one event (from :mod:`rackwatch.events`) for delivery; returns once it is safely on disk.

        Returns the outbox sequence number. Raises ``ValueError`` for an event type with no topic, or an event
        made for another rack.
        """
        if event.get("rack") is None:
            event = {**event, "rack": self.settings.rack}
        elif event["rack"] != self.settings.rack:
            raise ValueError(f"event for rack {event['rack']!r} given to the link of rack {self.settings.rack!r}")
        topic, qos, retain = self.topics.for_event(str(event.get("type")))
        if self._stopping.is_set():
            raise RuntimeError("this MQTT link is closed; events published now would not be sent until restart")
        seq = self.outbox.add(event, topic, qos=qos, retain=retain)
        self._events.put(("wake",))
        return seq

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def outbox_depth(self) -> int:
        """Events on disk not yet acknowledged by the broker."""
        return self.outbox.depth

    @property
    def refused(self) -> int:
        """Messages the broker refused for good (e.g. not authorised by its ACL); they are logged and dropped."""
        return self.outbox.counter("refused")

    @property
    def dropped(self) -> int:
        """Reps, sets or replies lost because the outbox was full (see :mod:`rackwatch.outbox`)."""
        return self.outbox.dropped

    def losses(self) -> dict[str, Any]:
        """Every loss and trouble counted so far, as the health event carries them (see docs/mqtt.md)."""
        return {**self.outbox.losses(), "pump_failures": self.pump_failures}

    def shutdown_report(self) -> list[str]:
        """What a user must know when the rack stops: events that did not get through, and why; losses of this run.

        One plain line each, for the exit message. Empty when everything was delivered and nothing was lost.
        """
        s, box = self.settings, self.outbox
        box.retry(force=True)   # the last chance for events waiting in memory (a full disk) to reach the disk
        lines = []
        depth, in_memory = box.depth, box.losses()["events_in_memory"]
        if depth:
            if self.pump_error:
                why = f"sending them failed ({self.pump_error})"
            elif not self.connected:
                why = ((self.last_error or "").removesuffix(RETRYING)
                       or f"the broker at {s.host}:{s.port} could not be reached")
            else:
                why = f"the broker at {s.host}:{s.port} did not acknowledge them in time"
            on_disk = depth - box.in_memory
            where = []
            if on_disk:
                where.append(f"{on_disk} stay in the outbox in {s.state_dir} and go out at the next start")
            if in_memory:
                where.append(f"{in_memory} rep/set/reply event(s) could not be written to disk ({box.disk_error}) "
                             "and are lost now")
            why = why if why.endswith((".", "?")) else why + "."
            lines.append(f"{depth} event(s) not delivered: {why} " + "; ".join(where) + ".")
        lost = {**box.losses_this_run(), "pump_failures": self.pump_failures}
        words = {"events_dropped": "event(s) dropped because the outbox was full",
                 "events_unreadable": "event(s) lost in a damaged outbox",
                 "events_refused": "message(s) refused by the broker (see its ACL)",
                 "outbox_damaged": "time(s) the outbox was found damaged",
                 "snapshots_skipped": "state/health snapshot(s) skipped because the disk was full",
                 "pump_failures": "failure(s) sending from the outbox"}
        said = [f"{n} {words[key]}" for key, n in lost.items() if n > 0]
        if said:
            kept = f"; damaged files kept: {', '.join(p.name for p in box.set_aside)}" if box.set_aside else ""
            lines.append(f"this run: {', '.join(said)}{kept}. See the log above.")
        return lines

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def wait_acked(self, seq: int, timeout: float = 10.0) -> bool:
        """Block until the broker has acknowledged event ``seq`` (as returned by :meth:`publish`).

        Events go out and are acknowledged in order, so this also means every earlier event is through.
        """
        with self._acked:
            return self._acked.wait_for(lambda: self._acked_upto >= seq, timeout)

    def wait_drained(self, timeout: float = 30.0) -> bool:
        """Block until every queued event is acknowledged (``True``) or ``timeout`` seconds pass (``False``)."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained) and disconnect cleanly. Unsent events stay on disk for the next start."""
        self._stopping.set()
        self._events.put(("wake",))
        if self._pump_thread:
            self._pump_thread.join(timeout)
        if self.connected:
            info = self._client.publish(self.topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass  # the connection went away meanwhile: the broker publishes the will instead
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        if self._owns_outbox:
            self.outbox.close()

    # -- paho callbacks (paho's thread) ------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = (f"the broker at {self.settings.host}:{self.settings.port} refused the connection "
                               f"({reason_code}); check the rack's username, password and the broker's ACL")
            log.error(self.last_error)
            return
        self.last_error = None
        # Forget paho's in-memory copies of unacknowledged messages: the pump resends them from disk, in order.
        drop = getattr(client, "drop_out_messages", None)   # paho-mqtt >= 2.1
        if drop is not None:
            drop()
        # Never take retained commands: they would run again at every reconnect. (A command published with the
        # retain flag still reaches us once, live, like any other.)
        client.subscribe(self.topics.commands,
                         options=SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
        if self.settings.ha_discovery:
            client.subscribe(f"{self.settings.ha_prefix}/status", qos=1)
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._republish_state(client)
        if self.settings.ha_discovery:
            self._publish_discovery(client)
        log.info("connected to %s:%s as %s (session present: %s)", self.settings.host, self.settings.port,
                 self.settings.client_id, flags.session_present)
        self._connected.set()
        self._events.put(("up",))

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError:`, so the exception is still at hand.
        self.last_error = describe_connect_error(sys.exc_info()[1], self.settings)
        log.warning(self.last_error)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            log.warning("lost the broker (%s); events wait on disk until it is back", reason_code)
        self._connected.clear()
        self._events.put(("down",))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._events.put(("ack", mid, reason_code))

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == f"{self.settings.ha_prefix}/status":
                if message.payload == b"online":   # Home Assistant restarted: it wants the configs again
                    self._publish_discovery(client)
            elif mqtt.topic_matches_sub(self.topics.commands, message.topic):
                self._handle_command(message)
        except Exception:  # never let one message take the link down
            log.exception("could not handle a message on %s", message.topic)

    # -- commands ------------------------------------------------------------------------------------------------

    def _handle_command(self, message: mqtt.MQTTMessage) -> None:
        try:
            if message.retain:   # only if the broker ignored our subscription's retain handling
                raise cmds.CommandRejected("commands must not be retained (they would run again at every "
                                           "reconnect); publish it without the retain flag and clear the "
                                           "retained one", name=cmds.command_name(message.topic))
            command = cmds.parse_command(message.topic, message.payload)
        except cmds.CommandRejected as err:
            log.warning("rejected a command on %s: %s", message.topic, err.reason)
            self._reply(err.command_id, err.name, ok=False, reason=err.reason)
            return

        if command.id in self._recent_replies:
            # QoS 1 may deliver a command twice: answer again, but do not act twice.
            self.publish(self._recent_replies[command.id])
            return
        if self.on_command is None:
            self._reply(command.id, command.name, ok=False, reason="this rack does not take commands right now")
            return
        try:
            self.on_command(command)
        except cmds.CommandRejected as err:
            self._reply(command.id, command.name, ok=False, reason=err.reason)
        except Exception as err:
            log.exception("the command handler failed on %r", command)
            self._reply(command.id, command.name, ok=False,
                        reason=f"the rack could not carry out the command ({type(err).__name__}); see its log")
        else:
            self._reply(command.id, command.name, ok=True)

    def _reply(self, command_id: str | None, name: str | None, *, ok: bool, reason: str | None = None) -> None:
        reply = cmds.reply_event(self.settings.rack, command_id=command_id, command=name, ok=ok, reason=reason)
        if command_id is not None:
            self._recent_replies[command_id] = reply
            while len(self._recent_replies) > 256:
                self._recent_replies.popitem(last=False)
        self.publish(reply)

    # -- retained things republished on every connect -------------------------------------------------------------

    def _republish_state(self, client: mqtt.Client) -> None:
        # The broker may have lost its retained messages (restart without persistence, someone cleared them).
        # If a newer state waits in the outbox the pump sends it anyway, and it must stay the last one.
        last = self.outbox.last_state()
        if last and not self.outbox.has_pending("state"):
            client.publish(self.topics.state, last[1], qos=1, retain=True)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        for topic, config in discovery_configs(self.settings):
            client.publish(topic, json.dumps(config, separators=(",", ":")), qos=1, retain=True)

    # -- the pump (its own thread) ---------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Send outbox rows in order while connected; delete each on its PUBACK. See the module docstring."""
        connected = False
        in_flight: dict[int, int] = {}   # paho mid -> outbox seq, for this connection only
        sent_up_to = 0                   # highest seq handed to paho on this connection
        while not self._stopping.is_set():
            try:
                item = self._events.get(timeout=0.5)
            except queue.Empty:
                item = ("wake",)
            acked: list[int] = []
            while True:   # take everything that is waiting, in order
                kind = item[0]
                if kind == "up":
                    connected, in_flight, sent_up_to = True, {}, 0
                elif kind == "down":
                    connected, in_flight = False, {}
                elif kind == "ack":
                    seq = in_flight.pop(item[1], None)
                    if seq is not None:   # else not ours (availability, discovery) or from an old connection
                        self._acknowledged(seq, item[2])
                        acked.append(seq)
                try:
                    item = self._events.get_nowait()
                except queue.Empty:
                    break
            # One commit (one fsync) for every PUBACK that came in meanwhile: replays after an outage go much
            # faster than deleting row by row. A crash before this commit only means those events go out again.
            if acked:
                with self._acked:
                    self._acked_upto = max(self._acked_upto, *acked)
                    self._acked.notify_all()
            try:
                self.outbox.remove(*acked)
                self.outbox.retry()   # events that waited in memory for a full disk, once it takes writes
                if connected:
                    sent_up_to = self._send_more(in_flight, sent_up_to)
                if self.pump_error is not None:
                    log.warning("sending from the outbox works again")
                    self.pump_error = None
            except Exception as exc:   # never let the pump thread die: count, say it, try again
                self.pump_failures += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != self.pump_error:   # once per kind of failure, not every second
                    log.exception("sending from the outbox failed (%s); trying again every second, counted in "
                                  "the health event's pump_failures", error)
                self.pump_error = error
                self._stopping.wait(1.0)

    def _acknowledged(self, seq: int, reason_code) -> None:
        if reason_code is not None and reason_code.is_failure:
            # The broker will never take this one (typically its ACL says no): retrying would block the queue.
            log.error("the broker refused outbox message %d (%s); dropping it", seq, reason_code)
            self.outbox.count("refused")

    def _send_more(self, in_flight: dict[int, int], sent_up_to: int) -> int:
        room = self.settings.window - len(in_flight)
        if room <= 0:
            return sent_up_to
        for entry in self.outbox.peek(after=sent_up_to, limit=room):
            try:
                info = self._client.publish(entry.topic, entry.payload, qos=entry.qos, retain=entry.retain)
            except (ValueError, TypeError) as exc:
                # A row no broker could take (a wildcard in its topic, a payload beyond MQTT's limit): retrying
                # would block the queue for good. Set it aside, counted, and go on with the next.
                log.error("outbox message %d (a %s event on %r) cannot be sent (%s); dropping it, counted in "
                          "events_unreadable", entry.seq, entry.kind, entry.topic, exc)
                self.outbox.count("events_unreadable")
                self.outbox.remove(entry.seq)
                sent_up_to = entry.seq
                continue
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break   # connection lost just now; the "down" notice is on its way
            sent_up_to = entry.seq
            if entry.qos == 0:
                self.outbox.remove(entry.seq)   # QoS 0 (health) has no acknowledgement: handed over is done
            else:
                in_flight[info.mid] = entry.seq
        return sent_up_to


# -- Home Assistant discovery ---------------------------------------------------------------------------------------

def discovery_configs(settings: LinkSettings) -> list[tuple[str, dict[str, Any]]]:
    """The retained Home Assistant MQTT discovery configs that make one rack a device with sensors.

    Topics are ``<prefix>/<component>/<rack>/<key>/config`` (node id = rack id, so the broker ACL can confine a
    rack to its own configs). Each sensor reads the rack's own state/rep/health topic through a value template.
    """
    t = Topics(settings.topic_root, settings.rack)
    rack = settings.rack
    device = {"identifiers": [f"rackwatch_{rack}"], "name": f"Squat rack {rack}", "manufacturer": "rackwatch",
              "model": "rackwatch edge unit"}
    common = {"availability_topic": t.availability, "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    state, rep, health = t.for_event("state")[0], t.for_event("rep")[0], t.for_event("health")[0]
    load_text = ("{% if value_json.load %}{{ value_json.load.value }} {{ value_json.load.units }}"
                 "{% else %}none{% endif %}")
    sensors: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", "reps_in_set", {"name": "Reps in set", "state_topic": state,
                                   "value_template": "{{ value_json.reps_in_set }}", "state_class": "measurement",
                                   "icon": "mdi:weight-lifter"}),
        ("sensor", "phase", {"name": "Phase", "state_topic": state, "value_template": "{{ value_json.phase }}"}),
        ("sensor", "exercise", {"name": "Exercise", "state_topic": state,
                                "value_template": "{{ value_json.exercise }}"}),
        ("sensor", "load", {"name": "Load", "state_topic": state, "value_template": load_text,
                            "icon": "mdi:weight-kilogram"}),
        ("binary_sensor", "lifter_seen", {"name": "Lifter at the rack", "state_topic": state,
                                          "value_template": "{{ 'ON' if value_json.lifter_seen else 'OFF' }}",
                                          "device_class": "occupancy"}),
        ("sensor", "last_rep_verdict", {"name": "Last rep verdict", "state_topic": rep,
                                        "value_template": "{{ value_json.verdict }}"}),
        ("sensor", "last_rep_severity", {"name": "Last rep knee cave", "state_topic": rep,
                                         "value_template": "{{ value_json.severity }}"}),
        ("sensor", "fps", {"name": "Frame rate", "state_topic": health, "value_template": "{{ value_json.fps }}",
                           "unit_of_measurement": "fps", "state_class": "measurement",
                           "entity_category": "diagnostic"}),
        ("sensor", "inference_ms", {"name": "Pose inference time", "state_topic": health,
                                    "value_template": "{{ value_json.inference_ms }}", "unit_of_measurement": "ms",
                                    "state_class": "measurement", "entity_category": "diagnostic"}),
        ("sensor", "cpu_temp", {"name": "CPU temperature", "state_topic": health,
                                "value_template": "{{ value_json.cpu_temp_c }}", "unit_of_measurement": "°C",
                                "device_class": "temperature", "state_class": "measurement",
                                "entity_category": "diagnostic"}),
        ("sensor", "outbox_depth", {"name": "Events waiting to send", "state_topic": health,
                                    "value_template": "{{ value_json.outbox_depth }}", "state_class": "measurement",
                                    "entity_category": "diagnostic"}),
    ]
    configs = []
    for component, key, config in sensors:
        config = {**config, **common, "unique_id": f"rackwatch_{rack}_{key}", "object_id": f"{rack}_{key}"}
        configs.append((f"{settings.ha_prefix}/{component}/{rack}/{key}/config", config))
    return configs


# -- TLS and connection errors in words ------------------------------------------------------------------------------

def check_tls_files(settings: LinkSettings) -> None:
    """Each TLS file of the settings exists, can be read and holds what it should; :class:`ConfigError` naming the
    file and what to do otherwise (``ssl`` alone says ``[Errno 2] No such file or directory`` without the name)."""
    roles = (("tls_ca", settings.tls_ca, "the CA certificate that signed the broker's certificate (ca.crt)"),
             ("tls_cert", settings.tls_cert, "this rack's client certificate"),
             ("tls_key", settings.tls_key, "the private key of this rack's client certificate"))
    for key, name, what in roles:
        if not name:
            continue
        path = Path(name)
        if not path.is_file():
            problem = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(f"[mqtt] {key} = {name!r}: that file {problem}. It must be {what}; copy it there "
                              "or fix the path in the config file.")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"[mqtt] {key} = {name!r} cannot be read ({exc.strerror}). It must be {what}, "
                              "readable by the user rackwatch runs as.") from None
    if settings.tls_ca:
        try:
            ssl.create_default_context(cafile=settings.tls_ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"[mqtt] tls_ca = {settings.tls_ca!r} holds no usable certificate ({exc.reason or exc}). "
                              "It must be the PEM file of the CA that signed the broker's certificate "
                              "(ca.crt, beginning with -----BEGIN CERTIFICATE-----).") from None
    if settings.tls_cert and settings.tls_key:
        try:
            ssl.create_default_context().load_cert_chain(settings.tls_cert, settings.tls_key)
        except ssl.SSLError as exc:
            raise ConfigError(f"[mqtt] tls_cert = {settings.tls_cert!r} and tls_key = {settings.tls_key!r} do not "
                              f"make a usable client certificate ({exc.reason or exc}): give the PEM certificate "
                              "and its own private key.") from None


RETRYING = " Retrying; events wait in the outbox meanwhile."

# OpenSSL's verification codes that have a plain explanation (see `man openssl-verify`).
_X509_EXPIRED, _X509_NOT_YET_VALID, _X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH = 10, 9, 62, 64
_X509_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)


def describe_connect_error(exc: BaseException | None, settings: LinkSettings) -> str:
    """Why the connection to the broker failed, and what to do, in one paragraph for the log and ``last_error``."""
    where = f"the broker at {settings.host}:{settings.port}"
    retry = RETRYING
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, detail = exc.verify_code, exc.verify_message or exc.reason or str(exc)
        if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH):
            return (f"TLS: the certificate of {where} is not made out to {settings.host!r} ({detail}). Connect "
                    "with a name the certificate lists (its subjectAltName), or give the broker a certificate for "
                    f"{settings.host}.{retry}")
        if code in _X509_UNKNOWN_ISSUER:
            return (f"TLS: the certificate of {where} was not signed by the CA in tls_ca = {settings.tls_ca!r} "
                    f"({detail}). Put the CA certificate that signed the broker's certificate there.{retry}")
        if code in (_X509_EXPIRED, _X509_NOT_YET_VALID):
            return (f"TLS: the certificate of {where} is not valid now ({detail}). Renew it on the broker, or, if "
                    f"it should be valid, check this device's clock (it says {time.strftime('%Y-%m-%d %H:%M')} "
                    f"UTC).{retry}")
        return f"TLS: the certificate of {where} was refused ({detail}).{retry}"
    if isinstance(exc, ssl.SSLError) or (settings.tls_ca and isinstance(exc, ConnectionResetError)):
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        return (f"TLS: the handshake with {where} failed ({reason}). Is {settings.port} the broker's TLS "
                f"port (usually 8883), and does the broker take TLS 1.2 or newer?{retry}")
    if isinstance(exc, ConnectionRefusedError):
        return (f"cannot reach {where}: nothing listens there (connection refused). Is the broker running, and is "
                f"{settings.port} its port?{retry}")
    if isinstance(exc, socket.gaierror):
        return f"cannot reach {where}: the name {settings.host!r} is unknown ({exc.strerror}).{retry}"
    if isinstance(exc, OSError):
        return f"cannot reach {where} ({exc.strerror or exc}).{retry}"
    return f"cannot reach {where}.{retry}"
