"""Home Assistant MQTT discovery: the retained configs that make a rack a device with sensors in Home Assistant.

The link publishes them (retained) on every connection and again whenever Home Assistant says it restarted
(``<prefix>/status`` = ``online``), if ``[mqtt] ha_discovery`` is on. Nothing here sends anything new: each
sensor reads the rack's own state, rep or health topic through a value template.
"""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as mqtt

from .mqtt import LinkSettings, Topics


def publish_discovery(client: mqtt.Client, settings: LinkSettings) -> None:
    """Publish every config of :func:`discovery_configs`, retained, through a connected paho client."""
    for topic, config in discovery_configs(settings):
        client.publish(topic, json.dumps(config, separators=(",", ":")), qos=1, retain=True)


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
