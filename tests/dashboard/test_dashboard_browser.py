"""The dashboard as staff see it: Debian's chromium (headless, via Playwright) against ``rackwatch dashboard``
running as a child process, a real Mosquitto, and a real rack (``rackwatch run`` on real footage).

Screenshots of each step land in out/dashboard-screenshots/ (gitignored) for whoever reviews the run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import rackwatch
from dashboard_parts import DashboardProcess, chromium, screenshot  # noqa: F401  (chromium: a fixture)
from mqtt_broker import MosquittoBroker, REPO, wait_until
from rackwatch.dashboard import samples

pytestmark = [pytest.mark.broker, pytest.mark.browser]

CLIP = REPO.parent / "shared" / "footage" / "kratika" / "squat_front_bodyweight.mp4"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, broker):
    workdir = tmp_path_factory.mktemp("dashboard")
    process = DashboardProcess(workdir, f"sqlite:///{workdir / 'dashboard.db'}", broker)
    yield process
    process.stop()


class Publisher:
    """A test stand-in for racks that publishes events made by the rack's own builders (QoS 1)."""

    def __init__(self, broker):
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-racks")
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(10)

    def send(self, event_or_topic, payload=None, retain=False) -> float:
        if payload is None:
            event = event_or_topic
            topic, payload = f"rackwatch/{event['rack']}/{event['type']}", json.dumps(event)
        else:
            topic = event_or_topic
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
        return time.monotonic()

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def racks(broker):
    publisher = Publisher(broker)
    yield publisher
    publisher.close()


def sign_in(chromium, dashboard, name="sam"):
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(dashboard.url + "/")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", DashboardProcess.USERS[name][1])
    page.click("button[type=submit]")
    page.wait_for_url(dashboard.url + "/")
    return page


def test_sign_in_refuses_a_wrong_password_and_lets_staff_in(chromium, dashboard):
    context = chromium.new_context()
    page = context.new_page()
    page.goto(dashboard.url + "/alerts")
    assert page.url == dashboard.url + "/login"      # every page needs a sign-in
    page.fill("input[name=name]", "sam")
    page.fill("input[name=password]", "not-her-password")
    page.click("button[type=submit]")
    assert "Wrong name or password" in page.inner_text(".error")
    screenshot(page, "01-sign-in-refused")
    page.fill("input[name=name]", "sam")
    page.fill("input[name=password]", "sam-password")
    page.click("button[type=submit]")
    page.wait_for_url(dashboard.url + "/")
    assert "sam (staff)" in page.inner_text("nav")
    cookie = next(c for c in context.cookies() if c["name"] == "rackwatch_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "Users" not in page.inner_text("nav")      # admins only
    context.close()


def test_a_real_rack_comes_online_answers_commands_and_goes_offline_when_killed(chromium, dashboard, broker,
                                                                                tmp_path):
    if not CLIP.is_file():
        pytest.fail(f"The footage is missing: {CLIP}")
    page = sign_in(chromium, dashboard)
    log = open(tmp_path / "rack.log", "wb")
    rack = subprocess.Popen([sys.executable, "-m", "rackwatch", "run", "--source", str(CLIP), "--rack", "rackA",
                             "--broker", f"mqtt://{broker.host}:{broker.port}", "--speed", "realtime",
                             "--state-dir", str(tmp_path / "rackA"), "--health-every", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        page.wait_for_selector("#tile-rackA[data-status=online]", timeout=60_000)
        screenshot(page, "02-rack-online")

        # Its first health report (every second here) reaches the tile; the health page shows its version.
        # (selectors, not wait_for_function: the page's Content-Security-Policy forbids the eval that polls it)
        page.wait_for_selector("#tile-rackA .camera:text-matches('^(camera ready|needs attention|camera needs)')",
                               timeout=15_000)
        page.goto(dashboard.url + "/health")
        assert page.inner_text("#health-rackA .version") == f"rackwatch {rackwatch.__version__}"
        screenshot(page, "02b-health-page")

        page.goto(dashboard.url + "/racks/rackA")
        page.fill("#load-value", "80")
        page.click("#set-load")
        page.wait_for_selector("#commands tr.command[data-status=ok]", timeout=15_000)
        assert '"value": 80.0' in page.inner_text("#commands")
        page.click("#identify")   # this rack has no panel: it says so, and the page shows its answer
        page.wait_for_selector("#commands tr.command[data-status=rejected]", timeout=15_000)
        assert "no panel to blink" in page.inner_text("#commands")
        screenshot(page, "03-rack-actions")

        page.goto(dashboard.url + "/")
        page.wait_for_selector("#tile-rackA[data-status=online]")
        page.wait_for_selector("#tile-rackA .load:has-text('80 kg')",
                               timeout=15_000)   # the rack's state now carries the load set from the board
        assert rack.poll() is None, "the rack finished its clip before the test could kill it"
        os.kill(rack.pid, signal.SIGKILL)        # no goodbye: the broker announces the last will
        rack.wait()
        page.wait_for_selector("#tile-rackA[data-status=offline]", timeout=10_000)
        page.wait_for_selector("#alerts .kind-offline", timeout=10_000)
        assert "rackA: Rack offline" in page.inner_text("#alerts")
        screenshot(page, "04-rack-killed-offline")
    finally:
        if rack.poll() is None:
            rack.kill()
            rack.wait()
        log.close()
        page.context.close()


def test_a_rep_changes_its_tile_colour_and_staff_acknowledge_the_alert(chromium, dashboard, racks):
    page = sign_in(chromium, dashboard)
    racks.send("rackwatch/rack05/availability", "online", retain=True)
    racks.send(samples.state("rack05", set_id="set-5", reps_in_set=1, load_kg=100, one_rm_kg=140))
    page.wait_for_selector("#tile-rack05[data-status=online][data-verdict=none]", timeout=5_000)

    sent = racks.send(samples.rep("rack05", "set-5", 1, "clean", load_kg=100, one_rm_kg=140))
    page.wait_for_selector("#tile-rack05[data-verdict=clean]", timeout=5_000)
    clean_s = time.monotonic() - sent
    sent = racks.send(samples.rep("rack05", "set-5", 2, "unjudged", load_kg=100, one_rm_kg=140))
    page.wait_for_selector("#tile-rack05[data-verdict=unjudged]", timeout=5_000)
    cave = samples.rep("rack05", "set-5", 3, "cave", load_kg=100, one_rm_kg=140)
    sent = racks.send(cave)
    page.wait_for_selector("#tile-rack05[data-verdict=cave]", timeout=5_000)
    cave_s = time.monotonic() - sent
    assert max(clean_s, cave_s) < 1.5, f"tiles changed {clean_s:.2f} s and {cave_s:.2f} s after the rep"
    colour = page.eval_on_selector("#tile-rack05", "t => getComputedStyle(t).borderLeftColor")
    assert colour == "rgb(209, 52, 47)"    # red: the knees caved

    alert = page.wait_for_selector("#alerts .alert.kind-cave_at_working_load:has-text('rack05')", timeout=5_000)
    assert "Rep 3: knees caved at 100 kg (71.4 % of max)" in alert.inner_text()
    screenshot(page, "05-cave-alert")
    alert.query_selector("button").click()
    page.wait_for_selector("#alerts .alert.kind-cave_at_working_load:has-text('rack05')", state="detached",
                           timeout=5_000)
    screenshot(page, "06-alert-acknowledged")
    page.goto(dashboard.url + "/alerts")
    row = page.locator("tr", has_text="Rep 3: knees caved at 100 kg")
    assert "by sam at" in row.inner_text()
    page.context.close()


def test_a_movement_not_counted_shows_on_its_tile_with_why_and_on_the_rack_page(chromium, dashboard, racks):
    # A lifter doing only jumps opens no set: the tile still says the last one was not counted, and why.
    page = sign_in(chromium, dashboard)
    racks.send("rackwatch/rack07/availability", "online", retain=True)
    racks.send(samples.state("rack07"))
    page.wait_for_selector("#tile-rack07[data-status=online][data-verdict=none]", timeout=5_000)
    assert page.query_selector("#tile-rack07 .not-counted") is None
    racks.send(samples.not_counted("rack07", "jump"))
    note = page.wait_for_selector("#tile-rack07 .not-counted", timeout=5_000)
    assert note.inner_text() == "not counted: a jump, not a squat"
    assert note.get_attribute("title") == samples.NOT_COUNTED_REASONS["jump"]
    assert page.get_attribute("#tile-rack07", "data-verdict") == "none"   # no rep: no verdict colour
    # The newest replaces it; its time written with an offset (the contract allows one): the page shows it in UTC.
    step = samples.not_counted("rack07", "step")
    at = datetime.fromisoformat(step["time"].replace("Z", "+00:00"))
    step["time"] = at.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    racks.send(step)
    page.wait_for_selector("#tile-rack07 .not-counted:text-is('not counted: a lunge or a step, not a squat')",
                           timeout=5_000)
    screenshot(page, "05b-not-counted-on-its-tile")

    def listed():   # stored (the board shows news before the store commits it): the rack's page, newest first
        page.goto(dashboard.url + "/racks/rack07")
        return [row.inner_text() for row in page.query_selector_all("#not-counted tr.missed td:nth-child(2)")]
    wait_until(lambda: len(listed()) == 2, what="both movements on the rack's page")
    assert listed() == [samples.NOT_COUNTED_REASONS["step"], samples.NOT_COUNTED_REASONS["jump"]]
    shown = page.query_selector("#not-counted tr.missed td:nth-child(1)").inner_text()
    assert shown == at.strftime("%H:%M:%S"), (shown, step["time"])   # UTC, not the +02:00 clock
    page.context.close()


def test_a_sets_chart_renders_and_the_csv_export_holds_its_reps(chromium, dashboard, racks):
    verdicts = ["clean", "clean", "minor", "cave", "cave"]
    reps = [samples.rep("rack06", "set-6", n, v, load_kg=120, one_rm_kg=140) for n, v in enumerate(verdicts, 1)]
    for rep in reps:
        racks.send(rep)
    remarks = ("Not judged on rep 5 (right): the knee was hidden.",
               "Not counted: 1 movement that looked like a rep: a jump, not a squat (1).")
    racks.send(samples.set_summary("rack06", "set-6", 5, 3, load_kg=120, one_rm_kg=140, remarks=remarks))
    page = sign_in(chromium, dashboard, name="ada")
    page.wait_for_selector("#tile-rack06[data-verdict=cave]", timeout=5_000)
    page.goto(dashboard.url + "/history?rack=rack06")
    page.click("#sets a")
    page.wait_for_selector("#chart[data-rendered] canvas", timeout=10_000)
    size = page.eval_on_selector("#chart canvas", "c => [c.width, c.height]")
    assert size[0] > 300 and size[1] > 200
    assert "5 reps, 3 clean, at 120 kg" in page.inner_text("main")
    assert page.locator("#reps tbody tr").count() == 5
    # What the rack said of the set in words: its remarks (a movement not counted among them) and cues.
    assert page.locator("#remarks li").all_inner_texts() == list(remarks)
    assert page.locator("#cues li").all_inner_texts() == ["push the knees out"]
    legend = page.inner_text("#chart")
    assert "left knee" in legend and "right knee" in legend and "moderate" in legend
    screenshot(page, "07-set-chart")

    response = page.request.get(dashboard.url + "/export/reps.csv?rack=rack06")
    assert response.ok and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in reps)
    assert [r["verdict"] for r in sorted(rows, key=lambda r: int(r["rep"]))] == \
        ["clean", "clean", "clean", "cave", "cave"]
    sets = list(csv.DictReader(io.StringIO(page.request.get(dashboard.url + "/export/sets.csv?rack=rack06").text())))
    assert [(s["rack"], s["reps"], s["caves"]) for s in sets] == [("rack06", "5", "2")]
    page.context.close()


def test_an_older_racks_health_report_is_shown_without_a_version(chromium, dashboard, racks):
    """A rack from before the loss fields and the version sends none of them: stored, shown, nothing lost."""
    old = samples.health("rack07", fps=12.5)
    for field in ("events_dropped", "events_unreadable", "events_refused", "outbox_damaged", "snapshots_skipped",
                  "pump_failures", "disk_full", "events_in_memory", "software_version"):
        del old[field]
    racks.send(old)
    page = sign_in(chromium, dashboard)
    page.wait_for_selector("#tile-rack07", timeout=5_000)
    page.goto(dashboard.url + "/health")
    row = page.locator("#health-rack07")
    assert "12.5" in row.inner_text()
    assert page.inner_text("#health-rack07 .version") == "not reported (a rack older than the version field)"
    assert page.inner_text("#health-rack07 .losses") == "none"
    assert "rack07" not in page.inner_text("main table:last-of-type")   # not kept aside as invalid
    page.context.close()


def test_forms_need_the_csrf_token(chromium, dashboard):
    page = sign_in(chromium, dashboard)
    forged = page.request.post(dashboard.url + "/alerts/1/ack", form={"csrf_token": "forged"}, max_redirects=0)
    assert forged.status == 403
    assert "did not come from the dashboard" in forged.text()
    missing = page.request.post(dashboard.url + "/racks/rack05/identify", max_redirects=0)
    assert missing.status == 403
    for path in ("/", "/login", "/static/board.js"):   # the security headers on pages, forms and files alike
        headers = page.request.get(dashboard.url + path).headers
        assert "img-src 'none'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    page.context.close()


def test_sign_in_is_rate_limited(broker, tmp_path):
    """A dashboard of its own: this locks the test's address out of signing in for five minutes."""
    import httpx

    dashboard = DashboardProcess(tmp_path, f"sqlite:///{tmp_path / 'limited.db'}", broker)
    with dashboard, httpx.Client(base_url=dashboard.url) as client:
        statuses = []
        for _ in range(7):
            form = client.get("/login").text
            token = form.split('name="csrf_token" value="')[1].split('"')[0]
            statuses.append(client.post("/login", data={"name": "sam", "password": "guess",
                                                        "csrf_token": token}).status_code)
        assert statuses == [401] * 5 + [429] * 2
        token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
        blocked = client.post("/login", data={"name": "sam", "password": "sam-password", "csrf_token": token})
        assert blocked.status_code == 429   # even the right password waits
