"""``rackwatch loadtest --racks N --seconds S [--json]``: how much a dashboard takes, end to end.

It starts its own Mosquitto and ``rackwatch dashboard`` (SQLite in a temporary folder) unless given ``--broker``
and ``--url`` (then ``--db`` names the dashboard's database, to count what it stored, and ``--user``/``--password``
a sign-in for the streams). Then, for ``S`` seconds:

- N simulated racks publish what a busy rack publishes, made by the rack's own event code
  (:func:`rackwatch.dashboard.samples.make_event`): a rep every 3 s with four state changes around it, a set
  summary every 5 reps, health every 2 s. Everything at QoS 1, so every event can be accounted for;
- 50 browser-like clients hold the board's server-sent event stream open.

It prints events/s ingested (the events stored over the time until the last one was seen in the database, the
count watched every 0.2 s from the start), the largest backlog seen (published, not yet stored), the latency from
publishing an event to its tile on the stream (p50, p99; an event that changes nothing on its rack's tile sends no
tile, so only the events that show are timed), and the events published, stored, lost and stored twice (counted by
id in the database).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import samples
from .server import DashboardError

EVENT_ID = re.compile(rb'"event":\s*"([0-9a-f-]{36})"')
REP_CYCLE_S = 3.0
HEALTH_EVERY_S = 2.0


class RackSimulator:
    """N racks' event streams on a few MQTT connections, in a thread; ``sent`` maps event id → publish time.

    Every event of the run is made before the clock starts (:meth:`prepare`), by the rack's own event code, with
    the time it is to be published at: the load test shares the machine with what it measures, and making the
    events took a third of its CPU during the run. The thread then only publishes them on time."""

    def __init__(self, host: str, port: int, racks: int, connections: int = 8):
        import paho.mqtt.client as mqtt

        self.racks = [f"load{n:04d}" for n in range(racks)]
        self.sent: dict[str, float] = {}
        self.published = 0
        self.time_skew_s = 0.0   # how much earlier than published the events' times are (0 unless prepare overran)
        self.clients = []
        for n in range(min(connections, racks)):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rackwatch-loadtest-{n}",
                                 protocol=mqtt.MQTTv5)
            client.max_inflight_messages_set(2000)
            client.max_queued_messages_set(0)
            client.connect(host, port)
            client.loop_start()
            self.clients.append(client)
        self._stop = threading.Event()
        self._infos = []
        self._events: list[tuple[float, int, str, str, bytes]] = []   # (offset, rack index, id, topic, payload)
        self._start_at = 0.0   # monotonic time of the first publish
        self.thread = threading.Thread(target=self._run, name="loadtest-racks", daemon=True)

    def plan(self, seconds: float):
        """What the racks publish in ``seconds``, in order: (offset s, rack index, sample function, its arguments).
        Each rack: its state first; then a rep every 3 s with four state changes around it, a set summary every 5
        reps, health every 2 s; the racks' cycles spread evenly over the 3 s."""
        due = []   # (offset, rack index, step): steps 0-3 are a rep's state changes and the rep, 4 is health
        for i, rack in enumerate(self.racks):
            yield 0.0, i, samples.state, dict(set_id=None, reps_in_set=0)
            offset = REP_CYCLE_S * i / len(self.racks)
            heapq.heappush(due, (offset, i, 0))
            heapq.heappush(due, (offset * HEALTH_EVERY_S / REP_CYCLE_S, i, 4))
        reps = [0] * len(self.racks)
        while due and due[0][0] < seconds:
            when, i, step = heapq.heappop(due)
            rack = self.racks[i]
            set_id = f"{rack}-set{reps[i] // 5}"
            if step == 4:
                yield when, i, samples.health, dict(fps=14.5, outbox_depth=0)
                heapq.heappush(due, (when + HEALTH_EVERY_S, i, 4))
                continue
            if step < 3:
                phase = ("descent", "bottom", "ascent")[step]
                yield when, i, samples.state, dict(set_id=set_id, reps_in_set=reps[i] % 5, phase=phase)
                heapq.heappush(due, (when + 0.7, i, step + 1))
                continue
            reps[i] += 1
            number = (reps[i] - 1) % 5 + 1
            verdict = ("clean", "clean", "minor", "clean", "cave")[number - 1]
            yield when, i, samples.rep, dict(set_id=set_id, number=number, verdict=verdict)
            yield when, i, samples.state, dict(set_id=set_id, reps_in_set=number)
            if number == 5:
                yield when, i, samples.set_summary, dict(set_id=set_id, reps=5, clean_reps=4)
            heapq.heappush(due, (when + REP_CYCLE_S - 2.1, i, 0))

    def prepare(self, seconds: float) -> None:
        """Make every event of a run of ``seconds`` now, each with the wall-clock time it will be published at
        (the run starts when they are made: the time that takes is estimated from the first 200, with room)."""
        from datetime import datetime, timezone

        plan = list(self.plan(seconds))
        probe = time.monotonic()
        for _, i, make, arguments in plan[:200]:
            make(self.racks[i], **arguments)
        lead = 2.0 + 2.0 * (time.monotonic() - probe) / max(1, min(200, len(plan))) * len(plan)
        start_wall, self._start_at = time.time() + lead, time.monotonic() + lead
        for offset, i, make, arguments in plan:
            event = make(self.racks[i], **arguments,
                         at=datetime.fromtimestamp(start_wall + offset, timezone.utc))
            self._events.append((offset, i, event["id"], f"rackwatch/{event['rack']}/{event['type']}",
                                 json.dumps(event).encode()))
        late = time.monotonic() - self._start_at
        if late > 0:   # the estimate was short: start now, the events' times a little early
            self._start_at, self.time_skew_s = time.monotonic(), late

    def wait_for_start(self) -> float:
        """Sleep until the run's start; returns it (monotonic)."""
        time.sleep(max(0.0, self._start_at - time.monotonic()))
        return self._start_at

    def _run(self) -> None:
        for offset, i, event_id, topic, payload in self._events:
            wait = self._start_at + offset - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            if self._stop.is_set():
                return
            self.sent[event_id] = time.monotonic()
            self._infos.append(self.clients[i % len(self.clients)].publish(topic, payload, qos=1))
            self.published += 1

    def start(self) -> "RackSimulator":
        self.thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        self.thread.join()
        deadline = time.monotonic() + timeout
        for info in self._infos:   # every QoS 1 publish acknowledged by the broker
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        for client in self.clients:
            client.loop_stop()
            client.disconnect()


async def watch_streams(url: str, cookies: dict, clients: int, sent: dict[str, float], latencies: list[float],
                        stop: asyncio.Event, connected: list[int]) -> None:
    """``clients`` connections to /stream; the first sighting of an event id on each is one latency sample.

    Each client is a bare HTTP/1.1 connection read with asyncio, its bytes searched with a regex: part of the
    measuring instrument, it shares the machine with the dashboard, so it must cost little (httpx's parser took a
    third of the load test's time). A browser's own parser is not in Python anyway."""
    from urllib.parse import urlsplit

    address = urlsplit(url)
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    request = (f"GET /stream HTTP/1.1\r\nHost: {address.netloc}\r\nAccept: text/event-stream\r\n"
               f"Cookie: {cookie}\r\n\r\n").encode()

    async def one() -> None:
        seen: set[str] = set()
        reader, writer = await asyncio.open_connection(address.hostname, address.port or 80)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise DashboardError(f"/stream answered {head.splitlines()[0].decode(errors='replace')}")
            connected.append(1)
            tail = b""
            while not stop.is_set():
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                now = time.monotonic()
                text = tail + chunk
                for event_id in EVENT_ID.findall(text):
                    event_id = event_id.decode()
                    if event_id not in seen and event_id in sent:
                        seen.add(event_id)
                        latencies.append(now - sent[event_id])
                tail = text[-60:]   # an id cut in two by the chunking is found with the next chunk
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, DashboardError)]
    if failed:
        raise failed[0]


class CpuMeter:
    """CPU time spent while measuring, by part: this process (the simulated racks and the stream clients), the
    dashboard and the broker when this process started them, and everything else on the machine (other users'
    work shares the cores and changes the figures: the report says how much of it there was). Linux (/proc)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self._start = self._read()

    @classmethod
    def _ticks(cls, pid: int) -> float:
        """CPU time of a process and its live children (the dashboard's ingesting process is its child)."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    ticks += cls._ticks(int(child))
                except (OSError, IndexError, ValueError):
                    pass    # ended meanwhile
        return ticks

    def _read(self) -> dict[str, float]:
        times = os.times()
        read = {"wall": time.monotonic(), "loadtest": times.user + times.system}
        for name, pid in self.pids.items():
            try:
                read[name] = self._ticks(pid)
            except (OSError, IndexError, ValueError):
                read[name] = float("nan")
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
            idle = values[3] + values[4]   # idle + iowait
            read["machine_busy"] = (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            read["machine_busy"] = float("nan")
        return read

    def figures(self) -> dict:
        """Cores used on average since the start, by part, and the machine's cores."""
        end = self._read()
        wall = max(end["wall"] - self._start["wall"], 1e-6)
        used = {name: (end[name] - self._start[name]) / wall for name in end if name not in ("wall", "machine_busy")}
        others = (end["machine_busy"] - self._start["machine_busy"]) / wall - sum(used.values())
        return {**{k: round(v, 2) for k, v in used.items()}, "others": round(max(others, 0.0), 2),
                "cores": os.cpu_count(), "seconds": round(wall, 1)}


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(args) -> dict:
    import httpx

    from .auth import hash_password
    from .demo import Broker, die_with_parent, free_port
    from .store import Store

    if args.racks < 1 or args.seconds < 1 or args.clients < 0:
        raise DashboardError("--racks and --seconds must be at least 1, --clients at least 0.")
    if (args.broker or args.url) and not (args.broker and args.url and args.db):
        raise DashboardError("To test a running dashboard give --broker, --url and --db (its database, to count "
                             "what it stored), with --user and --password for its streams.")
    workdir = Path(tempfile.mkdtemp(prefix="rackwatch-loadtest-"))
    broker = dashboard = None
    try:
        if args.broker:
            from rackwatch.rack import parse_broker_url
            host, port, _tls = parse_broker_url(args.broker)
        else:
            broker = Broker(workdir)
            host, port = "127.0.0.1", broker.port
        db = args.db or f"sqlite:///{workdir / 'dashboard.db'}"
        store = Store(db)
        store.migrate()
        user, password = args.user, args.password
        if not args.url:
            user, password = "loadtest", secrets.token_urlsafe(12)
            store.add_user(user, "staff", hash_password(password))
            web_port = free_port()
            url = f"http://127.0.0.1:{web_port}"
            log = open(workdir / "dashboard.log", "wb")
            dashboard = subprocess.Popen([sys.executable, "-m", "rackwatch", "dashboard", "--db", db, "--broker",
                                          f"mqtt://{host}:{port}", "--port", str(web_port)],
                                         stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            deadline = time.monotonic() + 30
            while not all(part in (workdir / "dashboard.log").read_text(errors="replace")
                          for part in ("rackwatch dashboard: http", "(storing)", "(live board)")):
                if dashboard.poll() is not None or time.monotonic() > deadline:
                    raise DashboardError(f"The dashboard did not start: see {workdir / 'dashboard.log'}.")
                time.sleep(0.1)
        else:
            url = args.url.rstrip("/")
        with httpx.Client(base_url=url) as client:
            token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/login", data={"name": user, "password": password, "csrf_token": token})
            cookies = dict(client.cookies)
        if "rackwatch_session" not in cookies:
            raise DashboardError(f"Could not sign in to {url} as {user}.")
        before = len(store.event_ids())
        pids = {name: process.pid for name, process in (("dashboard", dashboard),
                                                        ("broker", broker.process if broker else None)) if process}
        return asyncio.run(_measure(args, url, cookies, host, port, store, before, pids))
    finally:
        if dashboard is not None:
            dashboard.terminate()
            try:
                dashboard.wait(15)
            except subprocess.TimeoutExpired:
                dashboard.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _measure(args, url, cookies, host, port, store, before: int, pids: dict[str, int]) -> dict:
    from sqlalchemy import func, select

    from .tables import Event

    latencies: list[float] = []
    stop = asyncio.Event()
    connected: list[int] = []
    simulator = RackSimulator(host, port, args.racks)
    streams = asyncio.create_task(watch_streams(url, cookies, args.clients, simulator.sent, latencies, stop,
                                                connected))
    while len(connected) < args.clients and not streams.done():
        await asyncio.sleep(0.05)
    def stored_count() -> int:
        with store.session() as db:
            return db.scalar(select(func.count()).select_from(Event)) - before

    # The stored count, watched from the start: the time the last event went in is when it was first seen
    # there, not when the publisher had finished closing its connections.
    # The backlog (published, not yet stored) is watched too: a dashboard that keeps pace keeps it small.
    seen = {"count": 0, "at": time.monotonic(), "backlog": 0}

    async def watch_store() -> None:
        while True:
            published = simulator.published
            count = await asyncio.to_thread(stored_count)
            seen["backlog"] = max(seen["backlog"], published - count)
            if count != seen["count"]:
                seen["count"], seen["at"] = count, time.monotonic()
            await asyncio.sleep(0.2)

    await asyncio.to_thread(simulator.prepare, args.seconds)
    started = await asyncio.to_thread(simulator.wait_for_start)
    cpu = CpuMeter(pids)
    simulator.start()
    watcher = asyncio.create_task(watch_store())
    await asyncio.sleep(args.seconds)
    published_s = time.monotonic() - started
    await asyncio.to_thread(simulator.stop)
    published_ids = set(simulator.sent)

    # Wait for the dashboard to store the tail, until everything is in or the count stops moving for 10 s.
    while seen["count"] < len(published_ids) and time.monotonic() - seen["at"] < 10:
        await asyncio.sleep(0.1)
    watcher.cancel()
    cpu_cores = cpu.figures()
    ingest_s = seen["at"] - started
    stop.set()
    await streams
    with store.session() as db:
        ids = list(db.scalars(select(Event.id)))
        rows = db.scalar(select(func.count()).select_from(Event))
    stored = len(published_ids & set(ids))
    return {"racks": args.racks, "seconds": args.seconds, "clients": args.clients,
            "published": simulator.published, "stored": stored, "lost": len(published_ids) - stored,
            "duplicates": rows - len(set(ids)),
            "events_per_s": round(stored / ingest_s, 1), "published_per_s": round(simulator.published / published_s, 1),
            "p50_ms": _ms(percentile(latencies, 0.50)), "p99_ms": _ms(percentile(latencies, 0.99)),
            "latency_samples": len(latencies), "max_backlog": seen["backlog"], "cpu_cores": cpu_cores,
            "time_skew_s": round(simulator.time_skew_s, 2)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def format_report(figures: dict) -> str:
    return "\n".join([
        f"rackwatch loadtest: {figures['racks']} racks for {figures['seconds']} s, {figures['clients']} stream clients",
        f"  published   {figures['published']} events ({figures['published_per_s']}/s)",
        f"  ingested    {figures['events_per_s']} events/s (largest backlog {figures['max_backlog']} events)",
        f"  stored      {figures['stored']}  lost {figures['lost']}  stored twice {figures['duplicates']}",
        f"  publish → stream latency  p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms "
        f"({figures['latency_samples']} samples)",
        "  CPU (cores, on average): " + ", ".join(f"{k} {v}" for k, v in figures["cpu_cores"].items()
                                                 if k not in ("cores", "seconds"))
        + f" (of {figures['cpu_cores']['cores']}, over {figures['cpu_cores']['seconds']} s)"])


def main(args) -> int:
    # Stopped with SIGTERM (a timeout, a CI job cancelled), clean up as after Ctrl-C: the dashboard and the broker
    # it started stop too, and its temporary folder goes.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    figures = run(args)
    print(json.dumps(figures) if args.json else format_report(figures))
    return 0


def _stop_on_sigterm(signum, _frame) -> None:
    raise KeyboardInterrupt
