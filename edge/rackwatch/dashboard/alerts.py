"""When the dashboard raises an alert: pure rules, no I/O (the store calls them and keeps what they return).

- **cave at a working load**: a rep judged ``cave`` at or below 85 % of the lifter's one-rep max (near the max a
  cave is tolerated and shown as a note; at a working load it is a habit worth a word from staff);
- **repeated cave**: a second ``cave`` rep in the same set;
- **rack offline**: the rack said ``offline``, or the broker said it for the rack (the last will), and it has
  stayed offline past a grace period (30 s by default: a rack restarting is not news);
- **rack unhealthy**: low frame rate, hot or throttled CPU, events piling up in the rack's outbox, the state
  folder's disk full, or events lost on the rack: one of the health report's loss counters (:data:`LOSS_COUNTERS`)
  grew since the rack's previous report (or is above zero in the first report the dashboard sees).

Each alert has a ``key``: the store keeps one alert per key, so an event delivered twice raises it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlertRules:
    working_max_percent: float = 85.0   # at or below this share of the 1RM a cave is raised
    min_fps: float = 5.0                # below this the camera cannot follow a rep
    max_cpu_temp_c: float = 80.0        # a Pi throttles at 80-85 °C
    outbox_alarm: int = 50              # events waiting on the rack, and still growing: the link is down


@dataclass(frozen=True)
class NewAlert:
    key: str
    rack: str
    kind: str        # cave_at_working_load, repeated_cave, offline, unhealthy
    message: str


KIND_TITLES = {"cave_at_working_load": "Cave at a working load", "repeated_cave": "Cave repeated in a set",
               "offline": "Rack offline", "unhealthy": "Rack needs attention"}


def rep_alerts(rep: dict[str, Any], caves_in_set: int, rules: AlertRules) -> list[NewAlert]:
    """Alerts for one new rep; ``caves_in_set`` counts the set's ``cave`` reps including this one."""
    if rep["verdict"] != "cave":
        return []
    rack, set_id = rep["rack"], rep["set_id"]
    found = []
    load = rep.get("load") or {}
    percent = load.get("percent_1rm")
    if percent is not None and percent <= rules.working_max_percent:
        found.append(NewAlert(f"{rack}:{rep['id']}:working", rack, "cave_at_working_load",
                              f"Rep {rep['rep']}: knees caved at {load['value']:g} {load['units']} "
                              f"({percent:g} % of max)."))
    if caves_in_set >= 2:
        found.append(NewAlert(f"{rack}:{set_id}:repeated", rack, "repeated_cave",
                              f"Knees caved on {caves_in_set} reps of this set (latest: rep {rep['rep']})."))
    return found


#: The health report's loss counters (cumulative on the rack) and what one more means, in words for staff.
LOSS_COUNTERS = {
    "events_dropped": "reps, sets, replies or movements not counted dropped (the rack's outbox was full)",
    "events_unreadable": "events lost to a damaged outbox or refused by every broker",
    "events_refused": "events the broker refused for good (its access list)",
    "outbox_damaged": "damaged outbox files set aside",
    "snapshots_skipped": "state or health snapshots skipped (full disk)",
    "pump_failures": "failures sending from the outbox",
}


def health_problems(health: dict[str, Any] | None, previous: dict[str, Any] | None,
                    rules: AlertRules) -> list[str]:
    """What is wrong with a rack according to its newest health report, in words (empty when all is well)."""
    if health is None:
        return []
    problems = []
    if health["fps"] < rules.min_fps:
        problems.append(f"low frame rate ({health['fps']:g} fps)")
    if health.get("cpu_temp_c") is not None and health["cpu_temp_c"] >= rules.max_cpu_temp_c:
        problems.append(f"hot CPU ({health['cpu_temp_c']:g} °C)")
    if health.get("throttled"):
        problems.append("CPU throttled (power supply or heat)")
    depth = health["outbox_depth"]
    if depth >= rules.outbox_alarm and (previous is None or depth > previous.get("outbox_depth", 0)):
        problems.append(f"{depth} events waiting to be sent, and growing")
    if health.get("disk_full"):
        held = health.get("events_in_memory", 0)
        problems.append("the rack's disk is full" + (f" ({held} events held in memory)" if held else ""))
    return problems


def losses(health: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    """The loss counters that grew since ``previous`` (the rack's report before this one; None: the first the
    dashboard sees, compared with zero), in words. A counter that went down means the rack began a new outbox
    or restarted: nothing was lost in between that the dashboard can tell."""
    found = []
    for name, words in LOSS_COUNTERS.items():
        now, before = health.get(name, 0), (previous or {}).get(name, 0)
        if now > before:
            found.append(f"{now - before} more {words}" if previous else f"{now} {words}")
    return found


def loss_lines(health: dict[str, Any] | None) -> list[str]:
    """The health page's "losses on the rack": the disk if full, then each loss counter above zero, by its field
    name (as in the rack's health report and docs/mqtt.md); empty when nothing was lost."""
    if not health:
        return []
    lines = []
    if health.get("disk_full"):
        lines.append(f"disk_full: yes ({health.get('events_in_memory', 0)} events_in_memory)")
    elif health.get("events_in_memory"):
        lines.append(f"events_in_memory: {health['events_in_memory']}")
    lines += [f"{name}: {health[name]}" for name in LOSS_COUNTERS if health.get(name)]
    return lines


def health_alert(health: dict[str, Any], previous: dict[str, Any] | None, rules: AlertRules) -> NewAlert | None:
    """The ``unhealthy`` alert for a new health report, or None: what :func:`health_problems` finds, and any
    loss counter that grew (a loss is news once; the tile shows what stands now, not what grew)."""
    problems = health_problems(health, previous, rules) + losses(health, previous)
    if not problems:
        return None
    rack = health["rack"]
    text = "; ".join(problems)
    return NewAlert(f"{rack}:unhealthy:{health['id']}", rack, "unhealthy", text[0].upper() + text[1:] + ".")


def offline_alert(rack: str, since: str) -> NewAlert:
    return NewAlert(f"{rack}:offline:{since}", rack, "offline",
                    f"The rack has been offline since {since.replace('T', ' ')} UTC.")
