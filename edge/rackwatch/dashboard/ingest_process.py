"""The ingester in a process of its own, so that storing and the web app each have an interpreter (and a core).

At 500 racks one dashboard process was the limit: reading MQTT and storing took about two thirds of its time, the
streams and the board the rest, and the one interpreter lock kept the two to about 0.87 of a core together while
the machine had more. Here the child process runs the storing ``Ingester`` (MQTT at QoS 1 and the store, on its
own connection to the database) and tells the web process, over a pipe, when a committed batch raised alerts, and
its broker status every second. The web process keeps the board (fed by a live subscription of its own: see
``ingest``), the streams and the pages, and publishes the rack actions on that same connection.

The child ends with the web process: Linux's parent-death signal, and the pipe breaking at its next status.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass
from typing import Any

from .board import Board
from .ingest import Ingester
from .store import IngestResult

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0


@dataclass(frozen=True)
class IngestSettings:
    """What the child needs to connect (plain values: it is sent to a new interpreter)."""
    db: str
    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str
    share: str | None
    topic_root: str
    tls: bool


def _tell_alerts(pipe):
    """What the child does after each committed batch: tell the web process when it raised alerts (the web
    process shows the racks' news from its own live subscription, at once)."""
    def stored(result: IngestResult) -> None:
        if result.alerts:
            pipe.send(("alerts", None))
    return stored


def _child(settings: IngestSettings, pipe) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the web process stops this one (a traceback here would be noise).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG: end with the web process
    except (OSError, AttributeError):
        pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .server import event_loop_factory
    from .store import Store

    store = Store(settings.db)
    tls_context = None
    if settings.tls:
        import ssl
        tls_context = ssl.create_default_context()
    ingester = Ingester(store, None, settings.host, settings.port, username=settings.username,
                        password=settings.password, client_id=settings.client_id, share=settings.share,
                        topic_root=settings.topic_root, tls_context=tls_context, on_stored=_tell_alerts(pipe))

    async def main() -> None:
        running = asyncio.create_task(ingester.run())
        while not running.done():
            try:
                pipe.send(("status", (ingester.connected.is_set(), ingester.last_error, ingester.received)))
            except OSError:          # the web process is gone: so is our reason to store (and to acknowledge)
                os._exit(0)
            await asyncio.sleep(STATUS_EVERY_S)
        await running

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


class IngestionProcess:
    """In the web process: starts the storing child, mirrors its broker status (``connected``, ``last_error``,
    ``received``: the health page), feeds the board from a live subscription and publishes the rack actions on it."""

    def __init__(self, board: Board, settings: IngestSettings, *, tls_context=None):
        self.board, self.settings = board, settings
        self.host, self.port, self.topic_root = settings.host, settings.port, settings.topic_root
        self.connected = asyncio.Event()
        self.last_error: str | None = "starting"
        self.received = 0
        # A user of its own (``dashboard-live`` beside ``dashboard``, the same password): the shipped broker makes
        # every client id its username, and two connections with one username throw each other off.
        self.live = Ingester(None, board, settings.host, settings.port,
                             username=f"{settings.username}-live" if settings.username else None,
                             password=settings.password, client_id=f"{settings.client_id}-live",
                             topic_root=settings.topic_root, tls_context=tls_context)

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        await self.live.publish(topic, payload)

    async def run(self) -> None:
        live = asyncio.create_task(self.live.run())
        try:
            while True:
                await self._run_child()
                log.error("the ingesting process ended; starting it again in 1 s")
                await asyncio.sleep(1.0)
        finally:
            live.cancel()

    async def _run_child(self) -> None:
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(self.settings, sender), daemon=True,
                                  name="rackwatch-dashboard-ingest")
        process.start()
        sender.close()
        ended = loop.create_future()

        def received(kind: str, value) -> None:
            if kind == "alerts":
                self.board.alerts_changed()
            elif kind == "status":
                connected, self.last_error, self.received = value
                (self.connected.set if connected else self.connected.clear)()
            elif not ended.done():
                ended.set_result(None)

        def read() -> None:
            # A thread with blocking reads, not loop.add_reader: uvloop makes a watched descriptor non-blocking,
            # and a batch's message larger than the pipe's buffer then fails half read.
            try:
                while True:
                    kind, value = receiver.recv()
                    loop.call_soon_threadsafe(received, kind, value)
            except (EOFError, OSError):
                try:
                    loop.call_soon_threadsafe(received, "ended", None)
                except RuntimeError:
                    pass     # the loop has closed: the dashboard is stopping
            except RuntimeError:
                pass

        reader = threading.Thread(target=read, name="rackwatch-ingest-pipe", daemon=True)
        reader.start()
        try:
            await ended
        finally:
            if process.is_alive():
                process.kill()
            await asyncio.to_thread(process.join, 5)
            await asyncio.to_thread(reader.join, 5)
            receiver.close()
            self.connected.clear()
