"""`rackwatch run` and RackService: the real model on real footage, the panel on mock pins.

What is about judging, the panel and the settings runs the service into a list (:class:`ListSink`); what is about
delivery runs it through the MQTT link to a real Mosquitto. Every event is checked against the published contract
(contract/*.schema.json).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import tomllib

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from conftest import FOOTAGE, PROJECT
from mqtt_broker import MosquittoBroker, Subscriber, assert_contract, free_port, sample_rep, unique, wait_until
from rackwatch import commands as cmds
from rackwatch import contract
from rackwatch.config import ConfigError, load_config
from rackwatch.load import SettingsStore
from rackwatch.mqtt import LinkSettings, RackLink
from rackwatch.panel import FEEDBACK, PanelPins, PanelSettings, PanelTiming, RackPanel
from rackwatch.host import SystemdNotifier
from rackwatch.camera import Distant, VideoFile, open_frames, open_source
from rackwatch.rack import camera_fps, link_settings, parse_broker_url, serve
from rackwatch.service import RackService
from rackwatch.sinks import ListSink, StdoutSink

pytestmark = pytest.mark.footage

SQUAT = "calimiro_workouttracker/squat_19.mp4"     # 2 clean reps, 143 frames
CAVE = "tuxotiikeri/hyva_ja_paha.mp4"              # 1 single-leg rep, the right knee clearly caves
LIGHT_PINS = {name: getattr(PanelPins(), name) for name in ("green", "amber", "red")}
BUZZER_PIN = PanelPins().buzzer


def label_of(labels, clip):
    return next(label for label in labels if label["clip"] == clip)


def rackwatch_run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "rackwatch.cli", "run", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout, stdin=subprocess.DEVNULL)


def link_for(broker, state_dir, link_class=RackLink, **kwargs) -> RackLink:
    return link_class(LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=state_dir,
                                   reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False), **kwargs)


# -- 1. the command, as systemd would run it --------------------------------------------------------------------------

@pytest.mark.broker
def test_run_on_a_recording_publishes_reps_set_state_health_and_availability(broker, tmp_path, labels):
    label = label_of(labels, SQUAT)
    sub = Subscriber(broker, "rackwatch/#")
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    try:
        result = rackwatch_run("--source", FOOTAGE / SQUAT, "--rack", "rack01", "--broker",
                               f"mqtt://{broker.host}:{broker.port}", "--speed", "max", "--state-dir",
                               tmp_path / "state", "--load", "100", "--one-rm", "140",
                               env={"NOTIFY_SOCKET": str(notify_path)})
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        sub.wait_for(lambda s: b"offline" in s.payloads("rackwatch/rack01/availability"), what="offline")

        reps = unique(sub.events("rackwatch/rack01/rep"))
        assert [r["rep"] for r in reps] == list(range(1, len(label["reps"]) + 1))
        for rep in reps:
            assert rep["load"] == {"value": 100.0, "units": "kg", "one_rm": 140.0, "percent_1rm": 71.4}
            assert rep["verdict"] == "clean" and rep["severity"] == "none"   # two clean reps (see the LED test)
        sets = unique(sub.events("rackwatch/rack01/set"))
        assert len(sets) == 1 and sets[0]["reps"] == len(label["reps"])
        assert sets[0]["set_id"] == reps[0]["set_id"]

        states = sub.events("rackwatch/rack01/state")
        assert {"standing", "descent", "ascent"} <= {s["phase"] for s in states}
        assert max(s["reps_in_set"] for s in states) == len(label["reps"])
        assert states[-1]["set_id"] is None and states[-1]["reps_in_set"] == 0   # the set was closed at the end
        assert {s["idle"] for s in states} == {None}   # a recording at full speed never idles
        assert states[-1]["camera"] == "ready"         # the front view the rack saw, judged as `rackwatch aim` does
        assert len(sub.events("rackwatch/rack01/health")) >= 1
        assert sub.payloads("rackwatch/rack01/availability") == [b"online", b"offline"]
        assert_contract(sub, rack="rack01")

        # a dashboard that connects afterwards sees the rack offline and its last state, retained
        late = Subscriber(broker, "rackwatch/#", client_id="late")
        late.wait_for(lambda s: len(s.received()) >= 2, what="retained messages")
        retained = {m.topic: m for m in late.received()}
        assert retained["rackwatch/rack01/availability"].payload == b"offline"
        assert retained["rackwatch/rack01/state"].retain
        assert json.loads(retained["rackwatch/rack01/state"].payload)["id"] == states[-1]["id"]
        late.close()

        messages = []
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except socket.timeout:
                break
        assert messages[0].startswith("READY=1")
        assert "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"
    finally:
        notify.close()
        sub.close()
    assert "2 reps" in result.stderr and "rep 1:" in result.stdout


@pytest.mark.broker
def test_run_on_the_pi_camera_judges_what_it_films_and_closes_the_set_on_sigterm(broker, tmp_path, labels):
    """``rackwatch run --source picamera`` as on the rack, with the stand-in for Picamera2 (tests/fake_picamera)
    filming a real squat clip: frames as the ISP delivers them (320x180, RGB), at the clip's 25 fps."""
    import cv2

    label = label_of(labels, SQUAT)
    video = VideoFile(FOOTAGE / SQUAT)
    film = [cv2.cvtColor(cv2.resize(f.image, (320, 180), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            for f in video.frames()]
    video.close()
    np.save(tmp_path / "film.npy", np.stack(film))
    config = tmp_path / "rackwatch.toml"
    config.write_text("[camera]\nwidth = 320\nheight = 240\nfps = 25.0\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tests" / "fake_picamera"),
           "FAKE_PICAMERA_FRAMES": str(tmp_path / "film.npy"), "FAKE_PICAMERA_LOG": str(tmp_path / "camera.json")}
    sub = Subscriber(broker, "rackwatch/#")
    child = subprocess.Popen([sys.executable, "-m", "rackwatch.cli", "--config", str(config), "run", "--source",
                              "picamera", "--rack", "rack01", "--broker", f"mqtt://{broker.host}:{broker.port}",
                              "--state-dir", str(tmp_path / "state")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                             env=env)
    try:
        sub.wait_for(lambda s: len(unique(s.events("rackwatch/rack01/rep"))) >= len(label["reps"]), timeout=60,
                     what="the reps the camera filmed")
        child.send_signal(signal.SIGTERM)   # systemd stopping the service
        _out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "Traceback" not in err

    camera = json.loads((tmp_path / "camera.json").read_text())
    assert camera["main"] == {"size": [320, 240], "format": "BGR888"}
    frame_us = camera["controls"]["FrameDurationLimits"]
    if "capped" in err:   # a machine whose model cannot keep up with 25 fps
        assert frame_us[0] == frame_us[1] > 40_000
    else:
        assert frame_us == [40_000, 40_000]

    sub.wait_for(lambda s: b"offline" in s.payloads("rackwatch/rack01/availability"), what="offline")
    reps = unique(sub.events("rackwatch/rack01/rep"))
    assert [r["rep"] for r in reps] == list(range(1, len(label["reps"]) + 1))
    assert all(r["verdict"] == "clean" for r in reps)
    sets = unique(sub.events("rackwatch/rack01/set"))
    assert len(sets) == 1 and sets[0]["reps"] == len(label["reps"])   # the stop closed the set
    # The camera idles when nobody is there; this lifter was there throughout, so it stayed awake.
    assert {s["idle"] for s in sub.events("rackwatch/rack01/state")} == {False}
    assert_contract(sub, rack="rack01")
    sub.close()


def test_the_camera_is_capped_at_what_the_model_keeps_up_with():
    assert camera_fps(10.0, invoke_ms=40.0) == 10.0            # a Pi 5: the model could do 21 fps
    assert camera_fps(30.0, invoke_ms=95.0) == pytest.approx(1000 / (95 * 1.15))   # a Pi 4: about 9 fps


@pytest.mark.broker
def test_an_unreachable_broker_is_not_fatal_and_the_events_go_out_at_the_next_start(tmp_path):
    # Three black frames: nobody there, but the run still publishes its state and health.
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.zeros((240, 320, 3), np.uint8))
    down = MosquittoBroker(tmp_path / "broker", port=free_port())   # configured, not running
    state = tmp_path / "state"
    args = ("--source", frames, "--broker", f"mqtt://{down.host}:{down.port}", "--speed", "max",
            "--state-dir", state)
    result = rackwatch_run(*args, "--drain-timeout", "0.5")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("no connection to the broker") == 1
    assert "stay in the outbox" in result.stderr

    with down:
        sub = Subscriber(down, "rackwatch/#")
        try:
            assert rackwatch_run(*args).returncode == 0
            sub.wait_for(lambda s: len(s.events("rackwatch/rack01/state")) >= 4, what="both runs' states")
            assert len(sub.events("rackwatch/rack01/health")) >= 1
            assert_contract(sub, rack="rack01")
        finally:
            sub.close()


@pytest.mark.parametrize("url, words", [
    ("localhost:1883", "mqtt://"), ("http://broker:1883", "mqtt://"), ("mqtt://:1883", "names no host"),
    ("mqtt://broker:99999", "Port out of range"), ("mqtt://rack01:secret@broker", "--username"),
    ("mqtts://broker", "tls_ca"),
])
def test_a_bad_broker_address_is_a_clear_error(url, words, tmp_path):
    with pytest.raises(ConfigError, match=words):
        link_settings("rack01", tmp_path, None, broker=url)
    if url == "http://broker:1883":   # and through the command: exit 2, one line, no traceback
        result = rackwatch_run("--source", FOOTAGE / SQUAT, "--broker", url, "--state-dir", tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr and "mqtt://" in result.stderr


def test_broker_addresses_and_the_example_config():
    assert parse_broker_url("mqtt://broker.gym.lan") == ("broker.gym.lan", 1883, False)
    assert parse_broker_url("mqtts://10.0.0.2:8884") == ("10.0.0.2", 8884, True)
    example = PROJECT / "deploy" / "rackwatch.example.toml"
    config = load_config(example)
    settings = link_settings(config.rack.id, config.rack.state_dir, config.mqtt,
                             broker="mqtt://10.0.0.2:1884", username="rack01", password="pw")
    assert (settings.host, settings.port, settings.username, settings.password) == ("10.0.0.2", 1884, "rack01", "pw")
    assert config.panel == PanelSettings()
    assert tomllib.loads(example.read_text())["mqtt"]["topic_root"] == settings.topic_root
    with pytest.raises(ConfigError, match="--rack"):
        link_settings("rack 01", "/tmp")


# -- 2. the panel, driven by the pipeline -----------------------------------------------------------------------------

def lit(factory: MockFactory, pin: int) -> bool:
    """Whether the pin was ever driven high (its history survives the panel's close)."""
    return any(state.state for state in factory.pin(pin).states)


@pytest.mark.parametrize("clip, exercise, expected", [(CAVE, "single-leg", "cave"), (SQUAT, "squat", "clean")])
def test_the_verdict_of_each_rep_lights_its_led_and_plays_its_tune(tmp_path, interpreter, clip, exercise, expected):
    store = SettingsStore(tmp_path / "state")
    store.set_load(100)
    store.set_one_rm(140)
    store.set_exercise(exercise)
    factory = MockFactory(pin_class=MockPWMPin)
    sink = ListSink()
    injected = clip == SQUAT   # one run with a panel the test owns, one with a panel the service builds
    timing = PanelTiming(verdict_time=60, bounce_time=None)
    panel = RackPanel(store, pin_factory=factory, timing=timing) if injected else None
    service = RackService(sink, store, interpreter, open_frames(str(FOOTAGE / clip), "max"), rack="rack01",
                          panel=panel, pin_factory=factory, panel_settings=PanelSettings(timing=timing),
                          notifier=SystemdNotifier({}), out=io.StringIO())
    try:
        assert service.run() == 0
        reps = sink.of_type("rep")
        verdicts = [rep.verdict for rep in reps]
        assert verdicts and set(verdicts) == {expected}
        assert all(rep.to_wire()["load"]["percent_1rm"] == 71.4 and rep.exercise == exercise for rep in reps)
        light = FEEDBACK[expected].light
        assert lit(factory, LIGHT_PINS[light])
        assert not any(lit(factory, LIGHT_PINS[other]) for other in LIGHT_PINS if other != light)
        assert lit(factory, BUZZER_PIN)
        if injected:   # still showing the last verdict, and the status light says the lifter is there
            assert panel.lights[light].is_lit
            assert panel.status == "ready"   # no broker to miss: the list takes every event
    finally:
        if panel is not None:
            panel.close()


class _WithBlackFrames:
    """The first ``count`` frames of a recording with ``black`` ones blacked out (a camera glitch, a lifter's hand
    over the lens), noting the panel's status light after each frame has been judged."""

    channels = "bgr"

    def __init__(self, clip: str, count: int, black: range, panel: RackPanel):
        self.video, self.count, self.black, self.panel = VideoFile(FOOTAGE / clip), count, black, panel
        self.fps = self.video.fps
        self.frame_count, self.dropped = count, 0
        self.status: list[str] = []

    def frames(self):
        for frame in self.video.frames():
            if frame.index >= self.count:
                return
            if frame.index in self.black:
                frame.image[:] = 0
            yield frame
            self.status.append(self.panel.status)

    def close(self) -> None:
        self.video.close()


def test_a_frame_or_two_without_the_lifter_does_not_blink_the_status_light(tmp_path, interpreter):
    # The status light and the dashboard's "lifter at the rack" say the same, and neither flickers: the lifter
    # squats once and stands, and two black frames while standing between reps change nothing.
    store = SettingsStore(tmp_path / "state")
    panel = RackPanel(store, pin_factory=MockFactory(pin_class=MockPWMPin),
                      timing=PanelTiming(verdict_time=60, bounce_time=None))
    frames = _WithBlackFrames(SQUAT, 85, range(70, 72), panel)
    sink = ListSink()
    service = RackService(sink, store, interpreter, frames, rack="rack01", panel=panel,
                          notifier=SystemdNotifier({}), out=io.StringIO())
    try:
        assert service.run() == 0
        assert frames.status[25:] == ["ready"] * (85 - 25)   # settled by frame 25 (1 s), steady through the gap
        states = sink.of_type("state")
        assert not states[0].lifter_seen and all(s.lifter_seen for s in states[1:])
    finally:
        panel.close()


# -- 3. commands and settings -------------------------------------------------------------------------------------------

def test_commands_change_the_store_the_analyzer_and_the_published_state(tmp_path, interpreter):
    store = SettingsStore(tmp_path / "state")
    sink = ListSink()
    service = RackService(sink, store, interpreter, rack="rack01", notifier=SystemdNotifier({}))
    service.start()

    def command(name, **payload):   # as the link hands it over
        return cmds.parse_command(f"rackwatch/rack01/cmd/{name}", json.dumps(payload).encode())

    try:
        service.handle_command(command("load", id="c1", value=120, units="kg"))
        service.handle_command(command("one_rm", id="c2", value=330, units="lb"))   # kept as sent, shown in kg
        assert (store.settings.load, round(store.settings.one_rm, 2), store.settings.units) == (120.0, 149.69, "kg")
        assert service.analyzer.lifter.load == 120.0 and service.analyzer.lifter.in_units("lb").one_rm == 330
        with pytest.raises(cmds.CommandRejected, match="a load of 340 lb is above the one-rep max of 330 lb"):
            service.handle_command(command("load", id="c2b", value=340, units="lb"))
        assert json.loads((tmp_path / "state" / "settings.json").read_text())["load"] == 120.0
        service.handle_command(command("exercise", id="c3", exercise="single-leg"))
        assert service.analyzer.lifter.exercise == "single-leg"
        with pytest.raises(cmds.CommandRejected, match="no panel to blink"):
            service.handle_command(command("identify", id="c4"))
        with pytest.raises(cmds.CommandRejected, match="kg"):
            service.handle_command(command("load", id="c5", value=5000, units="kg"))
        assert store.settings.load == 120.0

        states = sink.of_type("state")
        assert len(states) == 4   # at the start, then one per change that was accepted
        assert states[-1].to_wire()["load"] == {"value": 120.0, "units": "kg", "one_rm": 149.69, "percent_1rm": 80.2}
        assert states[-1].exercise == "single-leg"
        for event in sink:
            contract.validate(event)
    finally:
        service.close()


@pytest.mark.broker
def test_remote_commands_change_the_store_the_analyzer_and_the_retained_state(broker, tmp_path, interpreter):
    store = SettingsStore(tmp_path / "state")
    sub = Subscriber(broker, "rackwatch/#")
    link = link_for(broker, tmp_path / "state")
    service = RackService(link, store, interpreter, None, rack="rack01", notifier=SystemdNotifier({}))
    service.start()
    link.start()
    try:
        assert link.wait_connected(10)

        def send(name, payload):
            sub.client.publish(f"rackwatch/rack01/cmd/{name}", json.dumps(payload), qos=1)

        def reply(command_id):
            sub.wait_for(lambda s: any(e["command_id"] == command_id for e in s.events("rackwatch/rack01/reply")),
                         what=f"the reply to {command_id}")
            return next(e for e in sub.events("rackwatch/rack01/reply") if e["command_id"] == command_id)

        send("load", {"id": "c1", "value": 120, "units": "kg"})
        assert reply("c1")["status"] == "ok"
        send("one_rm", {"id": "c2", "value": 330, "units": "lb"})   # kept as sent, shown in the rack's kg
        assert reply("c2")["status"] == "ok"
        assert (store.settings.load, round(store.settings.one_rm, 2), store.settings.units) == (120.0, 149.69, "kg")
        assert service.analyzer.lifter.load == 120.0 and service.analyzer.lifter.in_units("lb").one_rm == 330
        send("load", {"id": "c2b", "value": 340, "units": "lb"})   # above the max: refused, saying what to do
        assert reply("c2b")["reason"] == ("a load of 340 lb is above the one-rep max of 330 lb: lower the load to "
                                          "330 lb or less, or raise the one-rep max first (for a new best)")

        send("exercise", {"id": "c3", "exercise": "single-leg"})
        assert reply("c3")["status"] == "ok" and service.analyzer.lifter.exercise == "single-leg"
        send("identify", {"id": "c4"})   # no panel on this rack
        assert reply("c4") | {"id": None, "time": None} == {
            "type": "reply", "schema": 1, "id": None, "rack": "rack01", "time": None, "command_id": "c4",
            "command": "identify", "status": "rejected", "reason": "this rack has no panel to blink"}
        send("load", {"id": "c5", "value": 5000, "units": "kg"})
        assert reply("c5")["status"] == "rejected" and store.settings.load == 120.0

        expected = {"value": 120.0, "units": "kg", "one_rm": 149.69, "percent_1rm": 80.2}
        wait_until(lambda: link.outbox_depth == 0, what="the outbox to drain")
        late = Subscriber(broker, "rackwatch/rack01/state", client_id="late")
        late.wait_for(lambda s: len(s.received()) >= 1, what="the retained state")
        state = late.events()[0]
        assert late.received()[0].retain
        assert (state["load"], state["exercise"]) == (expected, "single-leg")
        late.close()
    finally:
        service.close()
        link.close()
        sub.close()
    assert_contract(sub, rack="rack01")


@pytest.mark.broker
def test_a_rep_not_counted_reaches_the_broker_on_its_topic_puts_the_last_light_out_and_plays(broker, tmp_path,
                                                                                            interpreter):
    # lnewco IMG_7027 three times further back (as in test_small_lifter): the model finds the lifter only a third
    # of the way down, so that rep's start was not seen. No rep counts and no set opens, but the last rep's light
    # goes out, the lifter hears it was not counted, and the dashboard gets why on rackwatch/rack01/not_counted
    # (QoS 1, through the outbox).
    store = SettingsStore(tmp_path / "state")
    sub = Subscriber(broker, "rackwatch/#")
    link = link_for(broker, tmp_path / "state")
    frames = Distant(open_source(FOOTAGE / "lnewco" / "IMG_7027_front.mov"), 3)
    factory = MockFactory(pin_class=MockPWMPin)
    panel = RackPanel(store, pin_factory=factory, timing=PanelTiming(verdict_time=60, bounce_time=None))
    out = io.StringIO()
    service = RackService(link, store, interpreter, frames, rack="rack01", panel=panel,
                          notifier=SystemdNotifier({}), out=out)
    # A previous lifter's clean rep, still lit (verdict_time is a minute); its tune is played and forgotten, so
    # that the buzzer's pin shows only what the movement not counted plays.
    panel.show_rep(sample_rep("rack01").model_copy(update={"verdict": "clean"}))
    wait_until(lambda: not panel.tune_player.is_playing, what="the clean rep's tune")
    factory.pin(BUZZER_PIN).clear_states()
    assert panel.lights["green"].is_lit and not lit(factory, BUZZER_PIN)
    link.start()
    try:
        assert link.wait_connected(10)
        assert service.run() == 0
        sub.wait_for(lambda s: s.received("rackwatch/rack01/not_counted"), what="the not_counted event")
        # The panel was shown the event before run() returned: every verdict light is out now.
        assert [name for name, light in panel.lights.items() if light.is_lit] == []
    finally:
        link.close()
        panel.close()
        sub.close()
    (message,) = sub.received("rackwatch/rack01/not_counted")
    assert message.qos == 1 and not message.retain
    event = json.loads(message.payload)
    contract.validate(event)
    assert (event["type"], event["why"], event["set_id"]) == ("not_counted", "start_unseen", None)
    assert "start was not seen" in event["reason"] and event["t_end"] < 3
    assert sub.received("rackwatch/rack01/rep") == [] and sub.received("rackwatch/rack01/set") == []
    # The buzzer played after the clean tune was forgotten: nothing but the not-counted tune plays on a rack
    # without reps.
    assert lit(factory, BUZZER_PIN) and f"not counted: {event['reason']}" in out.getvalue()
    assert service.counts["not_counted"] == 1
    assert_contract(sub, rack="rack01")


# -- 4. the sinks ---------------------------------------------------------------------------------------------------

def test_stdout_gets_one_json_event_a_line_as_the_broker_would(tmp_path, interpreter, labels):
    label = label_of(labels, SQUAT)
    out = io.StringIO()
    store = SettingsStore(tmp_path / "state")
    store.set_load(100)
    service = RackService(StdoutSink(out), store, interpreter, open_frames(str(FOOTAGE / SQUAT), "max"),
                          rack="rack01", notifier=SystemdNotifier({}), out=io.StringIO())
    assert service.run() == 0
    lines = out.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(line == json.dumps(e, separators=(",", ":"), ensure_ascii=False) for line, e in zip(lines, events))
    for event in events:
        contract.validate(event)
    assert [e["rep"] for e in events if e["type"] == "rep"] == list(range(1, len(label["reps"]) + 1))
    assert [e["reps"] for e in events if e["type"] == "set"] == [len(label["reps"])]
    assert events[0]["type"] == "state" and events[-1]["type"] == "health"
    assert events[-1]["outbox_depth"] == 0 and events[-1]["dropped_frames"] == 0


# -- 5. a rack whose link dies stops, so that systemd starts it again ---------------------------------------------

class _NetworkThreadBug(RackLink):
    """A link whose paho network thread dies of a bug once connected (as it did with keepalive = 100000)."""

    def _on_connect(self, *args) -> None:
        super()._on_connect(*args)
        raise RuntimeError("a bug in the network thread")


@pytest.mark.broker
def test_a_rack_whose_link_thread_dies_stops_with_exit_status_1_and_says_why(broker, tmp_path, interpreter):
    # (The pump cannot die this way: it counts and retries its own failures; see tests/test_outbox_link.py.)
    thread = "paho-mqtt-client-rackwatch-rack01"
    state = tmp_path / "state"
    link = link_for(broker, state, _NetworkThreadBug)
    store = SettingsStore(state)
    # Nothing but commands: without the watch this rack would wait for ever, as one with a camera would judge on.
    service = RackService(link, store, interpreter, None, rack="rack01", notifier=SystemdNotifier({}))
    err = io.StringIO()
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(serve(service, link, drain_timeout=1, err=err)),
                              daemon=True)
    runner.start()
    runner.join(30)
    if runner.is_alive():
        service.stop()   # let the runner end, then say what went wrong
        runner.join(30)
        pytest.fail("the rack went on running with a dead link thread")
    assert outcome == [1]
    message = err.getvalue()
    assert f"the rack's thread {thread} stopped (RuntimeError: a bug in the" in message
    assert "systemd starts it again" in message and str(state) in message
