"""The config file as a rack's owner writes it: every mistake stops the rack at start with a line that names it.

The file is checked as a whole when it is loaded (``rackwatch.config.load_config``), before a camera, a model or
a broker is touched; the example file in ``deploy/`` lists every setting with its default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from rackwatch.config import Config, ConfigError, load_config
from rackwatch.mqtt import MqttSettings
from rackwatch.panel import PanelSettings

from conftest import FOOTAGE

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "rackwatch.example.toml"
CLIP = FOOTAGE / "calimiro_workouttracker" / "squat_19.mp4"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rackwatch.toml"
    path.write_text(text)
    return path


def rackwatch(*args):
    return subprocess.run([sys.executable, "-m", "rackwatch.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)


# Each: the file's text, and the words the one line about it must hold (the table, the key, what is right).
BAD = [
    # issue 11: values that killed the MQTT thread or were accepted silently
    ("[mqtt]\nkeepalive = 100000\n", ["[mqtt] keepalive", "between 5 and 65535", "100000"]),
    ("[mqtt]\nsession_expiry_s = 2e10\n", ["[mqtt] session_expiry_s", "whole number", "4294967295"]),
    ("[mqtt]\nsession_expiry_s = 20000000000\n", ["[mqtt] session_expiry_s", "between 0 and 4294967295"]),
    ("[mqtt]\nha_prefix = \"#\"\n", ["[mqtt] ha_prefix", "'#'"]),
    ("[mqtt]\nha_prefix = \"home/+/x\"\n", ["[mqtt] ha_prefix", "'+'"]),
    ("[mqtt]\nwindow = 0\n", ["[mqtt] window", "between 1 and 65535"]),
    ("[mqtt]\noutbox_max = 0\n", ["[mqtt] outbox_max", "between 1 and"]),
    ("[mqtt]\nhost = \"\"\n", ["[mqtt] host", "host name or IP address"]),
    ("[mqtt]\nhost = \"broker gym\"\n", ["[mqtt] host", "host name or IP address"]),
    ("[mqtt]\nport = 0\n", ["[mqtt] port", "between 1 and 65535", "not 0"]),
    ("[mqtt]\nport = 99999\n", ["[mqtt] port", "between 1 and 65535", "not 99999"]),
    ("[mqtt]\nport = \"1883\"\n", ["[mqtt] port", "must be a whole number"]),
    ("[mqtt]\ntopic_root = \"rack watch\"\n", ["[mqtt] topic_root", "no spaces"]),
    ("[mqtt]\ntopic_root = \"rack\\u0000watch\"\n", ["[mqtt] topic_root", "control characters"]),
    ("[mqtt]\ntopic_root = \"rackwatch/#\"\n", ["[mqtt] topic_root", "'#'"]),
    ("[mqtt]\ntopic_root = \"/rackwatch\"\n", ["[mqtt] topic_root", "'/' at either end"]),
    ("[mqtt]\ntopic_root = \"rackwatch/\"\n", ["[mqtt] topic_root", "'/' at either end"]),
    ("[mqtt]\ntopic_root = \"\"\n", ["[mqtt] topic_root"]),
    ("[mqtt]\nreconnect_min_s = 60\nreconnect_max_s = 30\n", ["[mqtt]", "reconnect_min_s <= reconnect_max_s"]),
    ("[mqtt]\ntls_cert = \"/etc/rackwatch/rack01.crt\"\n", ["[mqtt]", "tls_cert and tls_key"]),
    ("[mqtt]\nhots = \"broker\"\n", ["[mqtt] has no setting 'hots'", "host"]),
    ("mqtt = 5\n", ["[mqtt] must be a table of settings, not 5"]),
    ("analysis = 3\n", ["[analysis] must be a table of settings, not 3"]),
    ("[analysis]\nreps = 1\n", ["[analysis.reps] must be a table of settings"]),
    ("panel = true\n", ["[panel] must be a table of settings, not true"]),
    ("[model]\nthreads = 100000\n", ["[model] threads", "between 0 and 64"]),
    ("[model]\nthreads = -1\n", ["[model] threads", "between 0 and 64"]),
    ("[model]\nruntime = \"tensorflow\"\n", ["[model] runtime", "ai_edge_litert", "tflite_runtime"]),
    ("[rack]\nid = \"rack 01\"\n", ["[rack] id", "letters, digits"]),
    ("[rack]\nid = \"rack/01\"\n", ["[rack] id", "letters, digits"]),
    ("[camera]\nfps = 0\n", ["[camera] fps", "more than 0"]),
    ("[camera]\nwidth = 10\n", ["[camera] width", "between 64 and 4096"]),
    ("[camera]\nfps = true\n", ["[camera] fps", "must be a number, not true"]),
    # nan and inf, anywhere
    ("[analysis]\nset_rest_s = nan\n", ["[analysis] set_rest_s", "finite number"]),
    ("[analysis]\nset_rest_s = inf\n", ["[analysis] set_rest_s", "finite number"]),
    ("[analysis.judge]\nnear_max_percent = nan\n", ["[analysis.judge] near_max_percent", "finite number"]),
    ("[analysis.reps]\nmin_rep_s = nan\n", ["[analysis.reps] min_rep_s", "finite number"]),
    ("[analysis.reps]\nmax_rep_s = inf\n", ["[analysis.reps] max_rep_s", "finite number"]),
    ("[analysis.smoothing]\nmin_cutoff_hz = -inf\n", ["[analysis.smoothing] min_cutoff_hz", "finite number"]),
    ("[camera]\nfps = nan\n", ["[camera] fps", "finite number"]),
    ("[panel.timing]\nverdict_time = inf\n", ["[panel.timing] verdict_time", "finite number"]),
    # ranges of the analysis
    ("[analysis]\nset_rest_s = 0\n", ["[analysis] set_rest_s", "between 1 and 3600"]),
    ("[analysis]\nmin_score = 1.5\n", ["[analysis] min_score", "more than 0 and less than 1"]),
    ("[analysis.judge]\nnear_max_percent = 1000\n", ["[analysis.judge] near_max_percent", "at most 150"]),
    ("[analysis.judge]\nworking_max_percent = 95\n", ["[analysis.judge]", "working_max_percent <= near_max_percent"]),
    ("[analysis.judge]\nminor_cave = 0.2\n", ["[analysis.judge]", "minor_cave < moderate_cave < severe_cave"]),
    ("[analysis.judge]\nmoderate_cave = \"lots\"\n", ["[analysis.judge] moderate_cave", "must be a number"]),
    ("[analysis.reps]\nmin_rep_s = 0\n", ["[analysis.reps] min_rep_s", "more than 0"]),
    ("[analysis.reps]\nmin_rep_s = 20.0\n", ["[analysis.reps]", "min_rep_s < max_rep_s"]),
    ("[analysis.reps]\nstart_depth = 0.05\n", ["[analysis.reps]", "end_depth < start_depth <= min_depth"]),
    ("[analysis.reps]\nmin_depth = 1.2\n", ["[analysis.reps] min_depth", "less than 1"]),
    ("[analysis.reps]\nupright_ratio = 3.0\n", ["[analysis.reps]", "upright_ratio < max_height_to_shank"]),
    ("[analysis.judge]\ndeload_after_caves = 2.5\n", ["[analysis.judge] deload_after_caves", "whole number"]),
    ("[analysis.reps]\nstart_depht = 0.1\n", ["[analysis.reps] has no setting 'start_depht'", "start_depth"]),
    ("[analysis.smoothing]\nmin_cutoff_hz = 0\n", ["[analysis.smoothing] min_cutoff_hz", "more than 0"]),
    # the panel
    ("[panel]\nenabled = \"yes\"\n", ["[panel] enabled", "true or false"]),
    ("[panel.pins]\nup = \"five\"\n", ["[panel.pins] up", "whole number"]),
    ("[panel.pins]\nup = 40\n", ["[panel.pins] up", "between 0 and 27"]),
    ("[panel.pins]\nup = 17\n", ["[panel.pins]", "GPIO 17 assigned to more than one part"]),
    ("[panel.pins]\nsegments = [1, 2]\n", ["[panel.pins]", "7 segment pins"]),
    ("[panel.timing]\nverdict_time = -1\n", ["[panel.timing] verdict_time", "between 0 and 3600"]),
    ("[panel.timing]\nfast_steps = 0\n", ["[panel.timing] fast_steps", "between 1 and 100"]),
    ("[panel]\nbuzer = true\n", ["[panel] has no setting 'buzer'", "buzzer"]),
    # the camera's aim
    ("[aim]\nmin_fps = 0\n", ["[aim] min_fps", "more than 0 and at most 120", "not 0"]),
    ("[aim]\nmin_knees_seen = 80\n", ["[aim] min_knees_seen", "between 0 and 1", "not 80"]),
    ("[aim]\nsquare_hips = \"0.18\"\n", ["[aim] square_hips", "must be a number"]),
    ("[aim]\nmin_brightness = 230\n", ["[aim]", "min_brightness < max_brightness", "230 and 225"]),
    ("[aim]\nmax_tilt = 5\n", ["[aim] has no setting 'max_tilt'", "max_tilt_deg"]),
    ("aim = 5\n", ["[aim] must be a table of settings, not 5"]),
    # tables that are not there
    ("[dashboard]\nport = 8080\n", ["[dashboard]", "its own command-line flags"]),
    ("[rak]\nid = \"rack01\"\n", ["no table [rak]", "rack"]),
]


@pytest.mark.parametrize("text, words", BAD, ids=[text.strip().replace("\n", " ") for text, _ in BAD])
def test_a_wrong_setting_is_refused_with_a_line_naming_it(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message


def test_every_problem_gets_its_own_line(tmp_path):
    path = write(tmp_path, "[mqtt]\nport = 0\nwindow = 0\n[model]\nthreads = 100000\n[dashboard]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 4 and all(line.startswith(f"{path}: ") for line in lines)
    assert [k for k in ("[dashboard]", "port", "window", "threads") if any(k in line for line in lines)] == \
        ["[dashboard]", "port", "window", "threads"]


@pytest.mark.parametrize("content, words", [
    (bytes(range(256)) * 4, ["not a text file", "UTF-8"]),
    (b"\x89PNG\r\n\x1a\n" + os.urandom(64), ["not a text file"]),
    (b"[mqtt]\nhost = \"a\x00b\"\n", ["not valid TOML"]),
    (b"[analysis\n", ["not valid TOML"]),
])
def test_a_file_that_is_not_a_toml_text_is_refused(tmp_path, content, words):
    path = tmp_path / "rackwatch.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_a_missing_file_or_a_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="No config file"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


GOOD = [
    ("", {}),
    ("[camera]\nfps = 15\nwidth = 640\nheight = 480\n", {"camera.fps": 15.0, "camera.width": 640}),
    ("[mqtt]\nhost = \"broker.gym.lan\"\nport = 8883\ntopic_root = \"gym/rackwatch\"\n"
     "tls_ca = \"/etc/rackwatch/ca.crt\"\ntls_cert = \"/etc/rackwatch/r.crt\"\ntls_key = \"/etc/rackwatch/r.key\"\n",
     {"mqtt.topic_root": "gym/rackwatch", "mqtt.port": 8883, "mqtt.tls_key": "/etc/rackwatch/r.key"}),
    ("[mqtt]\nsession_expiry_s = 0\nkeepalive = 65535\n", {"mqtt.session_expiry_s": 0}),
    ("[model]\nthreads = 4\nruntime = \"tflite_runtime\"\n", {"model.threads": 4}),
    ("[panel]\nbuzzer = false\n[panel.pins]\nsegments = \"none\"\ndigits = []\ndp = \"none\"\nbuzzer = \"none\"\n"
     "[panel.timing]\nmode_timeout = \"none\"\nbounce_time = \"none\"\n",
     {"panel.buzzer": False, "panel.pins.segments": None, "panel.pins.buzzer": None, "panel.timing.mode_timeout": None}),
    ("[panel.pins]\ndigits = [2, 7, 8, 14]\n", {"panel.pins.digits": (2, 7, 8, 14), "panel.enabled": True}),
    ("[analysis]\nset_rest_s = 90\n[analysis.reps]\nmin_rep_s = 1\n[analysis.judge]\nnear_max_percent = 95\n",
     {"analysis.set_rest_s": 90.0, "analysis.reps.min_rep_s": 1.0, "analysis.judge.near_max_percent": 95.0}),
    ("[aim]\nmin_fps = 6\nsquare_hips = 0.15\n", {"aim.min_fps": 6.0, "aim.square_hips": 0.15, "aim.margin": 0.02}),
]


@pytest.mark.parametrize("text, expected", GOOD)
def test_a_good_config_loads(tmp_path, text, expected):
    config = load_config(write(tmp_path, text))
    for dotted, value in expected.items():
        node = config
        for part in dotted.split("."):
            node = getattr(node, part)
        assert node == value and type(node) is type(value), dotted


def test_without_a_panel_table_there_is_no_panel(tmp_path):
    assert load_config(write(tmp_path, "[camera]\nfps = 10\n")).panel is None
    assert load_config(write(tmp_path, "[panel]\n")).panel == PanelSettings()


def test_the_settings_cannot_change_once_loaded():
    config = load_config(None)
    with pytest.raises(ValueError):
        config.analysis.reps.min_rep_s = 0.1


# -- the example file: every setting, with its default ----------------------------------------------------------------

def test_the_example_file_loads_and_its_values_are_the_defaults():
    example = load_config(EXAMPLE)
    # The two documented exceptions: a rack logs in to the gym's broker as itself, and the example has a panel.
    assert example.mqtt.username == "rack01" and MqttSettings().username is None
    assert example.panel == PanelSettings()
    expected = Config(mqtt=MqttSettings(username="rack01"), panel=PanelSettings())
    assert example == expected


def _settings(model: type[BaseModel], table: tuple[str, ...] = ()):
    """(table, key, field) for every setting of the tree, tables first."""
    for key, field in model.model_fields.items():
        kinds = [k for k in (field.annotation, *getattr(field.annotation, "__args__", ()))
                 if isinstance(k, type) and issubclass(k, BaseModel)]
        if kinds:
            yield from _settings(kinds[0], table + (key,))
        else:
            yield table, key, field


def test_the_example_file_lists_every_setting():
    data = tomllib.loads(EXAMPLE.read_text())
    missing = []
    for table, key, field in _settings(Config):
        node = data
        for part in table:
            node = node.get(part, {})
        # TOML has no "nothing": an optional setting whose default is none (password, tls_ca) is shown commented.
        commented = f"# {key} = " in EXAMPLE.read_text()
        if key not in node and not (field.default is None and commented):
            missing.append(f"[{'.'.join(table)}] {key}")
    assert not missing, f"deploy/rackwatch.example.toml does not list {missing}"


# -- through the command: exit 2, a line, no traceback, nothing started -----------------------------------------------

@pytest.mark.parametrize("text, word", [
    ("[mqtt]\nkeepalive = 100000\n", "[mqtt] keepalive"),
    ("mqtt = 5\n", "[mqtt] must be a table"),
    ("[model]\nthreads = 100000\n", "[model] threads"),
    ("[analysis.reps]\nmin_rep_s = nan\n", "[analysis.reps] min_rep_s"),
    ("[mqtt]\ntopic_root = \"rack watch\"\n", "[mqtt] topic_root"),
    ("[dashboard]\nport = 8080\n", "[dashboard]"),
    ("[aim]\nmin_fps = -1\n", "[aim] min_fps"),
])
def test_the_rack_does_not_start_with_a_wrong_config(tmp_path, text, word):
    state = tmp_path / "state"
    result = rackwatch("--config", write(tmp_path, text), "run", "--source", CLIP, "--state-dir", state,
                       "--broker", "mqtt://127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and word in result.stderr, result.stderr
    assert not state.exists()   # refused before anything started: not even the state folder was made


def test_a_binary_config_file_is_one_line_through_the_command(tmp_path):
    path = tmp_path / "rackwatch.toml"
    path.write_bytes(os.urandom(512) + b"\xff\xfe")
    result = rackwatch("--config", path, "models", "verify")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "not a text file" in result.stderr, result.stderr


def test_a_wrong_rack_id_on_the_command_line_is_refused(tmp_path):
    result = rackwatch("run", "--source", CLIP, "--rack", "rack 01", "--state-dir", tmp_path / "state",
                       "--broker", "mqtt://127.0.0.1:1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--rack" in result.stderr and "letters, digits" in result.stderr, result.stderr
