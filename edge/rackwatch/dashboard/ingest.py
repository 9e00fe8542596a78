"""The ingester: an MQTT 5 subscriber that stores everything the racks publish, and the board's live view.

Storing (``Ingester(store, ...)``): it subscribes to ``<root>/+/#`` with QoS 1 in a persistent session (clean
start off, session kept an hour), so messages published while the dashboard or the broker restarts wait in the
broker and arrive afterwards. Each message is read and checked against the contract as it arrives
(:func:`~rackwatch.dashboard.store.check`) and written in batches (one transaction per batch, in a worker thread),
so a burst from many racks costs a few commits, not one per message. Whatever a message holds, the ingester goes
on: broken ones end in the store's ``invalid_messages``; a batch the database refuses is stored message by message
(the one refused is kept aside too); while the database is away, the ingester waits and tries again.

A QoS 1 message is acknowledged to the broker only once its batch is committed (paho's manual acknowledgement):
until then the broker keeps it in the session, so a dashboard killed with a backlog gets it again when it comes
back, and the store's ids drop what had been stored already. The broker sends at most ``RECEIVE_MAXIMUM``
unacknowledged messages at a time (MQTT 5 Receive Maximum); the rest of a backlog waits in the broker.

The live view (``Ingester(None, board, ...)``): a connection of its own, QoS 0, no session, subscribed to the
kinds of message a tile shows (``TILE_LEAVES``), that hands each checked message's news to the board at once
(:meth:`Board.show`). The board never waits for the database: a tile used to change only after the batch holding
its message was committed, and the process storing at 1 000 messages a second read its socket in the gaps its
store thread left (both share one interpreter lock), so tiles lagged by up to a second. The same connection
publishes the rack actions. With ``store`` and ``board`` both given, one connection does both (the tests).

Several dashboard processes can share the ingestion with an MQTT 5 shared subscription (``share="dash"``
subscribes ``$share/dash/<root>/+/#``): each message goes to one of them, and the ids keep the store free of
repeats. A shared subscription gets no retained messages, so each process also subscribes to the retained
availability and state normally. Each process's live view sees every rack.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from .board import TILE_LEAVES, Board, RackNews
from .store import Checked, IngestResult, Message, Store, check

log = logging.getLogger(__name__)

BATCH = 500
BATCH_EVERY_S = 0.05
# Unacknowledged messages the broker may have out to us at once: a few batches, so the writer never waits for the
# broker (at 500 a batch and 20 batches a second, 10 000 a second), while a backlog stays in the broker's queue
# (its max_queued_messages must hold it) instead of our memory.
RECEIVE_MAXIMUM = 4 * BATCH


@dataclass(slots=True)
class _Received:
    """A checked message with what acknowledging it needs: the connection it came on (a message id means nothing on
    the next one: the broker sends the unacknowledged messages again there, with ids of that connection), its id
    and QoS."""
    message: Checked
    connection: int
    mid: int
    qos: int


def _taking(arrived: Callable[[Any], None]) -> type[asyncio.Queue]:
    """aiomqtt's queue of incoming messages, as a class that hands each message to ``arrived`` as paho reads it.

    aiomqtt's own message iterator makes a task and an ``asyncio.wait`` for every message, so draining a message
    takes several turns of the event loop while its socket reader adds one a turn: at 1 000 messages a second,
    with the web's streams on the same loop, the queue ran up to two seconds behind the socket."""

    class Taking(asyncio.Queue):
        def put_nowait(self, item) -> None:
            arrived(item)

    return Taking


class Ingester:
    def __init__(self, store: Store | None, board: Board | None, host: str, port: int, *,
                 username: str | None = None, password: str | None = None, client_id: str = "rackwatch-dashboard",
                 share: str | None = None, topic_root: str = "rackwatch", tls_context=None,
                 on_stored: Callable[[IngestResult], None] | None = None):
        """``store``: store what arrives (None: a live view, QoS 0). ``board``: shown the racks' news as it
        arrives (None: nobody here shows it). ``on_stored``: told each committed batch (by default the board's
        :meth:`Board.stored`)."""
        self.store, self.board = store, board
        self.on_stored = on_stored or (board.stored if board is not None else None)
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.client_id, self.share, self.topic_root = client_id, share, topic_root
        self.tls_context = tls_context
        self.connected = asyncio.Event()
        self.received = 0
        self.totals = IngestResult()
        self.last_error: str | None = None
        self._client = None
        self._connection = 0      # counts the connections; _Received.connection is the one a message came on
        self._queue: asyncio.Queue[_Received] = asyncio.Queue()

    async def run(self) -> None:
        """Connect, subscribe and store (or show), forever; reconnects with backoff when the broker goes away."""
        writer = asyncio.create_task(self._write() if self.store is not None else asyncio.Event().wait())
        try:
            delay = 0.5
            while True:
                try:
                    await self._session()
                    delay = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as exc:   # aiomqtt.MqttError and OSError: the broker is away
                    self.connected.clear()
                    self._client = None
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("broker %s:%s unreachable (%s); retrying in %.1f s", self.host, self.port,
                                exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            writer.cancel()

    async def _session(self) -> None:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        storing = self.store is not None
        show = self.board.show if self.board is not None else None
        self._connection += 1
        connection = self._connection

        def arrived(message: aiomqtt.Message) -> None:
            self.received += 1
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            raw = Message(message.topic.value, payload)
            try:
                checked = check(raw, self.topic_root)
                if show is not None:
                    news = RackNews.of(checked)
                    if news is not None:
                        show((news,))
            except Exception as exc:   # never let one message stop the others (or the connection)
                log.exception("could not read a message on %s", raw.topic)
                checked = Checked(raw, error=f"could not be read: {type(exc).__name__}: {exc}")
            if storing:
                self._queue.put_nowait(_Received(checked, connection, message.mid, message.qos))

        properties = Properties(PacketTypes.CONNECT)
        if storing:
            properties.SessionExpiryInterval = 3600
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client = aiomqtt.Client(self.host, self.port, identifier=self.client_id, username=self.username,
                                password=self.password, protocol=aiomqtt.ProtocolVersion.V5,
                                clean_start=not storing, properties=properties, keepalive=15,
                                tls_context=self.tls_context, queue_type=_taking(arrived))
        # aiomqtt 2.x does not pass paho's manual_ack through; its paho client is ``_client`` (paho >= 2.0 has
        # manual_ack_set and ack). Without it paho would acknowledge each message before we store it.
        client._client.manual_ack_set(storing)
        async with client:
            everything = f"{self.topic_root}/+/#"
            if not storing:
                for leaf in TILE_LEAVES:
                    await client.subscribe(f"{self.topic_root}/+/{leaf}", qos=0)
            elif self.share:
                await client.subscribe(f"$share/{self.share}/{everything}", qos=1)
                for leaf in ("availability", "state"):
                    await client.subscribe(f"{self.topic_root}/+/{leaf}", qos=1)
            else:
                await client.subscribe(everything, qos=1)
            self._client = client
            self.connected.set()
            self.last_error = None
            if storing:
                log.info("listening to %s on %s:%s (storing)", everything, self.host, self.port)
            else:
                log.info("listening to %s/+/%s on %s:%s (live board)", self.topic_root, "|".join(TILE_LEAVES),
                         self.host, self.port)
            async for _ in client.messages:   # nothing comes out (``arrived`` took it): this waits for the end
                pass

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            batch = [await self._queue.get()]
            # At most one batch per BATCH_EVERY_S: a message that comes after a quiet spell is written at once, but
            # a busy broker's messages are gathered, so the transactions stay at twenty a second at most instead of
            # one per message or two (at 100 racks: half the CPU).
            wait = last + BATCH_EVERY_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            last = loop.time()
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            result = await self._store([received.message for received in batch])
            self._acknowledge(batch)
            self.totals.stored += result.stored
            self.totals.duplicates += result.duplicates
            self.totals.invalid += result.invalid
            if self.on_stored is not None:
                self.on_stored(result)

    def _acknowledge(self, batch: list[_Received]) -> None:
        """Acknowledge a stored batch's QoS 1 messages, in the order received (as MQTT asks). Those that came on an
        earlier connection are not: the broker has sent them again on this one, and their repeats are acknowledged
        when stored (as duplicates)."""
        client = self._client
        if client is None:
            return
        for received in batch:
            if received.qos and received.connection == self._connection:
                client._client.ack(received.mid, received.qos)

    async def _store(self, batch: list[Checked]) -> IngestResult:
        """Store a batch; if it fails, store its messages one by one, so that one message the database refuses
        is kept aside instead of sinking the others. While the database is away, wait and try again."""
        while True:
            try:
                return await asyncio.to_thread(self.store.ingest, batch)
            except Exception as exc:
                if len(batch) > 1:
                    merged = IngestResult()
                    for message in batch:
                        one = await self._store([message])
                        merged.stored += one.stored
                        merged.duplicates += one.duplicates
                        merged.invalid += one.invalid
                        merged.alerts += one.alerts
                    return merged
                if await asyncio.to_thread(self.store.reachable):
                    log.warning("a message on %s could not be stored and is kept aside: %s", batch[0].message.topic,
                                exc)
                    return await asyncio.to_thread(self.store.keep_aside, batch[0].message,
                                                   f"could not be stored: {str(exc).splitlines()[0]}")
                log.error("the database is not reachable (%s); retrying in 1 s", str(exc).splitlines()[0])
                await asyncio.sleep(1.0)

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish a command (QoS 1, never retained); raises ``RuntimeError`` when not connected."""
        if self._client is None:
            raise RuntimeError("the dashboard is not connected to the broker")
        await self._client.publish(topic, json.dumps(payload), qos=1, retain=False, timeout=5)
