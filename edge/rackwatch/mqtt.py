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

Three threads, each with one job:

* **paho's network thread** (``loop_start``) runs the paho callbacks. They only record what happened, on queues,
  and never touch the disk or the caller's locks: a slow fsync must not hold up the keepalive pings.
* **the pump** works through what paho saw (connected, acknowledged, lost) and is the only thread that talks to
  the outbox for sending, so there are no races between "sent", "acknowledged" and "connection lost".
* **the command worker** carries out the commands, one at a time in the order they came: parsing, the
  ``on_command`` handler (which may fsync the lifter's settings and wait for the frame loop's lock) and the
  reply written to the outbox.

The link says it is :attr:`~RackLink.connected` once the broker has acknowledged (SUBACK) the subscription to
the rack's commands, not when the connection is made: a command sent the moment :meth:`~RackLink.wait_connected`
returns is then sure to reach the rack.

If the network thread or the pump dies anyway (a bug), the link can no longer send anything: ``rackwatch run``
then exits non-zero so that systemd restarts it (:mod:`rackwatch.rack`).

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

import logging
import queue
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import AfterValidator, Field, model_validator

from . import commands as cmds
from .events import Event, ReplyEvent
from .settings import ConfigError
from .outbox import DEFAULT_MAX_EVENTS, Outbox
from .settings import Settings

log = logging.getLogger(__name__)

# A rack id is one topic level and a Mosquitto username: no wildcards, no slashes, nothing exotic.
RACK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# event type -> (topic leaf, QoS, retained)
ROUTES = {
    "rep": ("rep", 1, False),
    "not_counted": ("not_counted", 1, False),
    "set": ("set", 1, False),
    "state": ("state", 1, True),
    "health": ("health", 0, False),
    "reply": ("reply", 1, False),
}


def _topic_prefix(value: str) -> str:
    """A topic root or discovery prefix: one or more topic levels, nothing a subscriber would read as more."""
    levels = value.split("/")
    if not 1 <= len(value) <= 100 or not all(levels) or any(c in value for c in "+#") or \
            any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"must be 1-100 characters of MQTT topic levels (e.g. 'rackwatch' or 'gym/rackwatch'): no "
                         f"spaces, control characters, '+' or '#', and no '/' at either end; not {value!r}")
    return value


def _host(value: str) -> str:
    if not 1 <= len(value) <= 253 or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"must be the broker's host name or IP address (e.g. 'broker.gym.lan'), not {value!r}")
    return value


def _rack_id(value: str) -> str:
    if not RACK_ID.fullmatch(value):
        raise ValueError(f"must be 1-64 letters, digits, '-' or '_' (it becomes an MQTT topic level and the "
                         f"rack's broker username), not {value!r}")
    return value


TopicPrefix = Annotated[str, AfterValidator(_topic_prefix)]
RackId = Annotated[str, AfterValidator(_rack_id)]


class MqttSettings(Settings):
    """The ``[mqtt]`` table of the config file: the gym's broker and how the link behaves (docs/mqtt.md)."""

    host: Annotated[str, AfterValidator(_host)] = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    topic_root: TopicPrefix = "rackwatch"
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None         # CA certificate that signed the broker's certificate: turns TLS on
    tls_cert: str | None = None       # client certificate and key, if the broker wants them
    tls_key: str | None = None
    keepalive: int = Field(30, ge=5, le=65535)
    """Seconds between pings while idle (MQTT allows at most 65535)."""
    outbox_max: int = Field(DEFAULT_MAX_EVENTS, ge=1, le=10_000_000)
    """Events kept on disk while the broker is away."""
    session_expiry_s: int = Field(3600, ge=0, le=2**32 - 1)
    """How long the broker keeps commands for us while we are away (MQTT 5 allows at most 2^32 - 1)."""
    reconnect_min_s: int = Field(1, ge=1, le=3600)
    reconnect_max_s: int = Field(30, ge=1, le=3600)
    window: int = Field(32, ge=1, le=65535)
    """Unacknowledged messages in flight at most."""
    ha_discovery: bool = True
    ha_prefix: TopicPrefix = "homeassistant"

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key (the rack's client certificate and its key), or neither")
        if (self.tls_cert or self.tls_key) and not self.tls_ca:
            raise ValueError("tls_cert/tls_key need tls_ca too (the CA that signed the broker's certificate)")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"needs reconnect_min_s <= reconnect_max_s, not {self.reconnect_min_s} and "
                             f"{self.reconnect_max_s}")
        return self


class LinkSettings(MqttSettings):
    """Everything the link needs to know: the ``[mqtt]`` table, the rack's id and its state folder.

    :func:`rackwatch.rack.link_settings` is the one place that builds it for a rack from the config file and
    the command line; tests and benches make their own.
    """

    rack: RackId
    state_dir: Path = Field(Path("/var/lib/rackwatch"), strict=False)   # a str is fine too

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

    It is an event sink (:class:`rackwatch.sinks.EventSink`) and the rack's command source. Three hooks, each
    ``None`` or a callable set before :meth:`start`:

    ``on_command(command)``
        called on the command worker thread with each valid :class:`rackwatch.commands.Command`, one at a time.
        It returns nothing to accept the command, or raises :class:`rackwatch.commands.CommandRejected` with a
        reason to refuse it (e.g. a load above the bar's capacity). Either way a reply goes out on
        ``<root>/<rack>/reply``.
    ``on_connected()``
        called on paho's thread each time the link is connected and subscribed (keep it short).
    ``on_acked(seq)``
        called on the pump thread when the broker has acknowledged the event :meth:`publish` numbered ``seq``
        (``rackwatch bench`` times the way to the broker with it).
    """

    def __init__(self, settings: LinkSettings, on_command: CommandHandler | None = None, *,
                 outbox: Outbox | None = None):
        self.settings = settings
        self.topics = Topics(settings.topic_root, settings.rack)
        self._owns_outbox = outbox is None
        # "is None", not "or": an empty outbox has length 0, and is false
        self.outbox = outbox if outbox is not None else Outbox(settings.state_dir, max_events=settings.outbox_max)
        self.on_command = on_command
        self.on_connected: Callable[[], None] | None = None
        self.on_acked: Callable[[int], None] | None = None
        self.last_error: str | None = None   # the latest connection problem, in words; None once connected
        self._connected = threading.Event()
        self._events: queue.Queue[tuple] = queue.Queue()   # what paho saw, for the pump, in order
        self.commands = cmds.CommandLog()   # the command worker's alone: redeliveries answered again, reused ids
        self._commands: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()   # for the command worker
        self._subscribing: dict[int, str] = {}   # SUBSCRIBE message id -> topic filter, until its SUBACK
        self._stopping = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._command_thread: threading.Thread | None = None
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
        client.on_subscribe = self._on_subscribe
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
        self._command_thread = threading.Thread(target=self._work_commands, name=f"rackwatch-commands-{s.rack}",
                                                daemon=True)
        self._command_thread.start()
        return self

    def __enter__(self) -> "RackLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the public surface --------------------------------------------------------------------------------------

    def publish(self, event: Event) -> int:
        """Queue one typed event (from :mod:`rackwatch.events`) for delivery; returns once it is safely on disk.

        The event is serialised here, at the edge: the outbox keeps its JSON. Returns the outbox sequence number.
        Raises ``ValueError`` for something that is not an event, an event type with no topic, or an event made
        for another rack.
        """
        if not isinstance(event, Event):
            raise ValueError(f"RackLink.publish takes an event from rackwatch.events, not {type(event).__name__}")
        if event.rack is None:
            event = event.for_rack(self.settings.rack)
        elif event.rack != self.settings.rack:
            raise ValueError(f"event for rack {event.rack!r} given to the link of rack {self.settings.rack!r}")
        topic, qos, retain = self.topics.for_event(event.type)
        if self._stopping.is_set():
            raise RuntimeError("this MQTT link is closed; events published now would not be sent until restart")
        seq = self.outbox.add(event.to_wire(), topic, qos=qos, retain=retain)
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
        """Block until the link is connected and subscribed to its commands (``True``) or ``timeout`` passes."""
        return self._connected.wait(timeout)

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
        if self._command_thread:   # first, so that the replies to the commands already taken still go out
            self._commands.put(None)
            self._command_thread.join(timeout)
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
        client.drop_out_messages()
        # Never take retained commands: they would run again at every reconnect. (A command published with the
        # retain flag still reaches us once, live, like any other.) Connected is said once the broker has
        # acknowledged this subscription (_on_subscribe), so no command sent after that can miss us.
        self._subscribing.clear()
        _rc, mid = client.subscribe(self.topics.commands, options=SubscribeOptions(
            qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
        self._subscribing[mid] = self.topics.commands
        if self.settings.ha_discovery:
            _rc, mid = client.subscribe(f"{self.settings.ha_prefix}/status", qos=1)
            self._subscribing[mid] = f"{self.settings.ha_prefix}/status"
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._republish_state(client)
        if self.settings.ha_discovery:
            self._publish_discovery(client)
        log.info("connected to %s:%s as %s (session present: %s)", self.settings.host, self.settings.port,
                 self.settings.client_id, flags.session_present)
        self._events.put(("up",))

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties) -> None:
        topic = self._subscribing.pop(mid, None)
        if topic is None:   # from a connection that is gone
            return
        refused = [code for code in reason_code_list if code.is_failure]
        if refused:
            self.last_error = (f"the broker at {self.settings.host}:{self.settings.port} refused the subscription to "
                               f"{topic} ({refused[0]}); nothing sent there reaches this rack. Check that the "
                               f"broker's ACL lets {self.settings.username or 'this rack'} read {topic}")
            log.error(self.last_error)
        if topic == self.topics.commands:   # refused or not, the events go out: the link is as up as it gets
            self._connected.set()
            if self.on_connected is not None:
                self.on_connected()

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
                self._commands.put(message)   # carried out on the command worker thread, in order
        except Exception:  # never let one message take the link down
            log.exception("could not handle a message on %s", message.topic)

    # -- commands (the command worker thread) ---------------------------------------------------------------------

    def _work_commands(self) -> None:
        while (message := self._commands.get()) is not None:
            try:
                self._handle_command(message)
            except Exception:   # never let one command take the worker down
                log.exception("could not handle the command on %s", message.topic)

    def _handle_command(self, message: mqtt.MQTTMessage) -> None:
        try:
            if message.retain:   # only if the broker ignored our subscription's retain handling
                raise cmds.CommandRejected("commands must not be retained (they would run again at every "
                                           "reconnect); publish it without the retain flag and clear the "
                                           "retained one", name=cmds.command_name(message.topic))
            command = cmds.parse_command(message.topic, message.payload)
            # QoS 1 may deliver a command twice: the same command again is answered again, but not acted on twice.
            earlier = self.commands.check(command)
        except cmds.CommandRejected as err:
            log.warning("rejected a command on %s: %s", message.topic, err.reason)
            self._reply(err.command_id, err.name, ok=False, reason=err.reason)
            return
        if earlier is not None:
            self.publish(earlier)
            return
        if self.on_command is None:
            self._reply(command.id, command.name, ok=False, reason="this rack does not take commands right now",
                        command=command)
            return
        try:
            self.on_command(command)
        except cmds.CommandRejected as err:
            self._reply(command.id, command.name, ok=False, reason=err.reason, command=command)
        except Exception as err:
            log.exception("the command handler failed on %r", command)
            self._reply(command.id, command.name, ok=False, command=command,
                        reason=f"the rack could not carry out the command ({type(err).__name__}); see its log")
        else:
            self._reply(command.id, command.name, ok=True, command=command)

    def _reply(self, command_id: str | None, name: str | None, *, ok: bool, reason: str | None = None,
               command: cmds.Command | None = None) -> None:
        reply = ReplyEvent.answer(self.settings.rack, command_id=command_id, command=name, ok=ok, reason=reason)
        if command is not None:
            self.commands.answered(command, reply)
        self.publish(reply)

    # -- retained things republished on every connect -------------------------------------------------------------

    def _republish_state(self, client: mqtt.Client) -> None:
        # The broker may have lost its retained messages (restart without persistence, someone cleared them).
        # If a newer state waits in the outbox the pump sends it anyway, and it must stay the last one.
        last = self.outbox.last_state()
        if last and not self.outbox.has_pending("state"):
            client.publish(self.topics.state, last[1], qos=1, retain=True)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        from .discovery import publish_discovery   # here, not at the top: discovery builds on this module's Topics

        publish_discovery(client, self.settings)

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
        if self.on_acked is not None:
            self.on_acked(seq)

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
