"""Real parts for the dashboard's tests: PostgreSQL on 127.0.0.1:5432, Debian's chromium, a dashboard process.

The test modules import the fixtures by name. There is no conftest.py in this folder on purpose: tests/ has one,
and the other tests' ``from conftest import ...`` must find that one.

- ``store_url`` runs a test on SQLite (a file) and on PostgreSQL (a fresh database per test, dropped after).
  Without PostgreSQL the PostgreSQL half is skipped, but under ``CI=true`` it fails: CI must run it.
- ``chromium`` is Playwright for Python driving /usr/bin/chromium (never a downloaded browser).
- ``DashboardProcess`` runs ``rackwatch dashboard`` as a child process, as staff run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import real_parts
from mqtt_broker import free_port, wait_until

# Every dashboard test needs the dashboard extra: without it the module stops here (a failure under CI).
real_parts.module("fastapi", "pip install -e '.[test,dashboard]', or run `bash deploy/dev-setup.sh`",
                  module_level=True)
PG_ADMIN = os.environ.get("RACKWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CHROMIUM = os.environ.get("RACKWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "out" / "dashboard-screenshots"


def fresh_postgres_database() -> tuple[str, str]:
    import psycopg

    name = f"rackwatch_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        real_parts.require(None, f"PostgreSQL is not reachable at {PG_ADMIN}: {str(exc).strip().splitlines()[0]}",
                           "apt-get install postgresql, or set RACKWATCH_TEST_PG (deploy/dev-setup.sh does it)")
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    return name, url


def drop_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A database URL with nothing in it yet: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dashboard.db'}"
        return
    name, url = fresh_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(name)


@pytest.fixture
def store(store_url):
    from rackwatch.dashboard.store import Store

    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).is_file():
        real_parts.require(None, f"Debian's chromium is not installed at {CHROMIUM}",
                           "apt-get install chromium (deploy/dev-setup.sh does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot(page, name: str) -> Path:
    """Save a screenshot as a test artefact in out/dashboard-screenshots (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def rackwatch(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rackwatch", *args], capture_output=True, text=True, timeout=60,
                          **kwargs)


class DashboardProcess:
    """``rackwatch dashboard`` in a child process, with a staff and an admin user."""

    USERS = {"sam": ("staff", "sam-password"), "ada": ("admin", "ada-password")}

    def __init__(self, workdir: Path, db: str, broker, *extra: str, env: dict[str, str] | None = None):
        self.workdir, self.db, self.broker = workdir, db, broker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for name, (role, password) in self.USERS.items():
            done = rackwatch("dashboard", "--db", db, "user", "add", name, "--role", role, "--password-stdin",
                             input=password + "\n")
            assert done.returncode == 0, done.stderr
        self.log_path = workdir / "dashboard.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rackwatch", "dashboard", "--db", db, "--broker",
             f"mqtt://{broker.host}:{broker.port}", "--port", str(self.port), "--offline-grace", "1", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        wait_until(self._answers, timeout=30, what=f"the dashboard answering on {self.url}")
        wait_until(lambda: all(part in self.log_path.read_bytes() for part in (b"(storing)", b"(live board)")),
                   timeout=30, what="the dashboard subscribing to the broker (to store, and for the live board)")

    def _answers(self) -> bool:
        import httpx

        assert self.process.poll() is None, f"the dashboard exited:\n{self.log()}"
        try:
            return httpx.get(self.url + "/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> "DashboardProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
