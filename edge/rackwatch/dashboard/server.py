"""``rackwatch dashboard``: the web app and the retention job, and the ingester in a child process of its own
(``ingest_process.py``: MQTT and the store on one core, the streams and the pages on another).

    rackwatch dashboard --db FILE|URL --broker mqtt://HOST:PORT [--host 127.0.0.1] [--port 8080]
    rackwatch dashboard --db FILE|URL user add NAME --role staff|admin     (asks for the password)

The database is migrated at every start. Plain HTTP is served only on a loopback address unless ``--plain-http``
says the network is trusted: elsewhere the session cookie is marked Secure, and the dashboard belongs behind a
TLS reverse proxy.
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import logging
import os
import sys

from .alerts import AlertRules
from .auth import hash_password
from .store import Store, StoreError

log = logging.getLogger("rackwatch.dashboard")


class DashboardError(Exception):
    """An expected failure of the dashboard command (bad address, no password); shown as one paragraph."""


def main(args) -> int:
    """Run the command parsed by cli.py; expected failures raise DashboardError."""
    try:
        store = Store(args.db)
        store.migrate()
    except StoreError as exc:
        raise DashboardError(str(exc)) from None
    if args.dashboard_action == "user":
        return add_user(store, args)
    return serve(store, args)


def add_user(store: Store, args) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise DashboardError("The two passwords differ; nothing was changed. Run the command again.")
    if len(password) < 8:
        raise DashboardError("A dashboard password needs at least 8 characters; nothing was changed.")
    store.add_user(args.name, args.role, hash_password(password))
    print(f"User {args.name} ({args.role}) can now sign in.")
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def event_loop_factory():
    """uvloop's event loop where it is installed (the dashboard extra, not on Windows): under load the streams,
    the broker connection and the web requests all run on it; else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve(store: Store, args, *, announce: tuple[str, ...] = ()) -> int:
    import uvicorn

    from rackwatch.config import ConfigError
    from rackwatch.rack import parse_broker_url

    from .board import Board
    from .ingest_process import IngestionProcess, IngestSettings
    from .web import create_app

    try:
        broker_host, broker_port, tls = parse_broker_url(args.broker)
    except ConfigError as exc:
        raise DashboardError(str(exc)) from None
    tls_context = None
    if tls:
        import ssl
        tls_context = ssl.create_default_context()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rules = AlertRules()
    board = Board(rules)
    board.load(store.racks())
    # The ingestion (MQTT and the store) runs in a child process with its own interpreter; this one serves.
    settings = IngestSettings(
        db=store.engine.url.render_as_string(hide_password=False), host=broker_host, port=broker_port,
        username=args.username or os.environ.get("RACKWATCH_DASHBOARD_MQTT_USER"),
        password=os.environ.get("RACKWATCH_DASHBOARD_MQTT_PASSWORD"),
        client_id=f"rackwatch-dashboard-{args.share or 'main'}-{os.getpid() if args.share else 0}",
        share=args.share, topic_root=store.topic_root, tls=bool(tls))
    ingester = IngestionProcess(board, settings, tls_context=tls_context)

    async def retention():
        while True:
            deleted = await asyncio.to_thread(store.prune, args.retention_days)
            if deleted:
                log.info("retention: deleted %d events older than %g days", deleted, args.retention_days)
            await asyncio.sleep(3600)

    async def offline_watch():
        while True:
            if await asyncio.to_thread(store.raise_offline_alerts, args.offline_grace):
                board.alerts_changed()
            await asyncio.sleep(1.0)

    app = create_app(store, board, ingester, secure_cookies=not (is_loopback(args.host) or args.plain_http),
                     background=(ingester.run, retention, offline_watch))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2,
                            access_log=False)
    server = uvicorn.Server(config)

    async def serve_and_announce():
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():   # say where only once it answers there
            await asyncio.sleep(0.05)
        if server.started:
            print(f"rackwatch dashboard: http://{args.host}:{args.port}/ (database "
                  f"{store.engine.url.render_as_string()}, broker {args.broker})", flush=True)
            for line in announce:
                print(line, flush=True)
        await serving

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve_and_announce())
    finally:
        store.close()
    return 0
