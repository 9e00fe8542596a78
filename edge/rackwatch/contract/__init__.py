"""The MQTT contract as files: ``asyncapi.yaml`` (topics, QoS, retain) and one JSON Schema per payload.

The JSON Schemas are **generated** from the typed events (:mod:`rackwatch.events`) and commands
(:mod:`rackwatch.commands`), so the types, the schemas and the parser cannot drift apart. After changing a type,
write the files again and commit them (a test fails while the committed files differ from what the types give)::

    python -m rackwatch.contract            # rewrites contract/*.schema.json
    python -m rackwatch.contract --check    # exit status 1 if they are out of date

The schemas are data shipped with the package, so a dashboard or a test can check payloads without copying
them. Validation needs the ``jsonschema`` package (a test/dashboard dependency, not needed on the rack)::

    from rackwatch.contract import validate
    validate(event)            # picks the schema from event["type"]; raises jsonschema.ValidationError
    validate(payload, "command")

A consumer written in Python can also read the wire straight into the typed events with
:func:`rackwatch.events.parse_event`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMAS = ("rep", "not_counted", "set", "state", "health", "reply", "command")
BASE_URI = "https://rackwatch.example/contract/"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
FOLDER = Path(__file__).parent

_TITLES = {
    "rep": "rackwatch: one squat rep",
    "not_counted": "rackwatch: a movement that looked like a rep but was not counted, and why",
    "set": "rackwatch: summary of a finished set",
    "state": "rackwatch: the rack's current state (retained)",
    "health": "rackwatch: how the rack itself is doing",
    "reply": "rackwatch: the rack's answer to a command",
    "command": "rackwatch: commands to a rack, on <root>/<rack>/cmd/<name>",
}


def schema_text(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload: ``rep``, ``not_counted``, ``set``, ``state``, ``health``,
    ``reply`` or ``command``."""
    return json.loads(schema_text(name))


def asyncapi_text() -> str:
    return resources.files(__name__).joinpath("asyncapi.yaml").read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def validator(name: str):
    """A ``jsonschema`` validator for one payload schema (the others resolvable by their ``$id``)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (BASE_URI + f"{n}.schema.json", Resource.from_contents(load_schema(n))) for n in SCHEMAS)
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(payload: Any, name: str | None = None) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``payload`` fits its schema (by default ``payload["type"]``).

    ``payload`` is a decoded JSON object as a consumer receives it, or a typed event (checked in its wire form).
    """
    if hasattr(payload, "to_wire"):
        payload = payload.to_wire()
    validator(name or str(payload.get("type"))).validate(payload)


# -- generating the schemas from the types -------------------------------------------------------------------------

def generate() -> dict[str, dict[str, Any]]:
    """Every payload schema, as the types define it: ``{name: schema}``."""
    from ..commands import COMMANDS, MAX_PAYLOAD_BYTES
    from ..events import EVENT_TYPES

    out: dict[str, dict[str, Any]] = {}
    for name, model in EVENT_TYPES.items():
        # Serialization mode: the schema says what the rack sends, every field present (defaults included).
        schema = model.model_json_schema(mode="serialization", by_alias=True)
        schema.pop("title", None)
        schema.pop("description", None)
        out[name] = _head(name, model.__doc__) | _tidy(schema)
    out["command"] = _head("command", (
        "The payload schema depends on the command name (the topic's last level): use $defs/<name>. The top level "
        f"accepts any valid command. Payloads are UTF-8 JSON of at most {MAX_PAYLOAD_BYTES} bytes, without "
        "repeated field names.")) | {
        "$defs": {name: _tidy(model.model_json_schema()) for name, model in COMMANDS.items()},
        "anyOf": [{"$ref": f"#/$defs/{name}"} for name in COMMANDS]}
    return out


def _head(name: str, description: str | None) -> dict[str, Any]:
    head = {"$schema": DIALECT, "$id": f"{BASE_URI}{name}.schema.json", "title": _TITLES[name]}
    if description:
        head["description"] = " ".join(description.split()).replace("``", "")
    return head


def _tidy(node: Any) -> Any:
    """pydantic's schema without its generated titles, descriptions folded onto one line, keys sorted."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in sorted(node.items()):
        if key == "title" and isinstance(value, str):
            continue   # "Set Id" for set_id: noise, and the same for every field
        if key == "description" and isinstance(value, str):
            value = " ".join(value.split()).replace("``", "")
        out[key] = _tidy(value)
    return out


def schema_files() -> dict[Path, str]:
    """The text of each generated schema file, as committed in this folder."""
    return {FOLDER / f"{name}.schema.json": json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
            for name, schema in generate().items()}


def stale_files() -> list[Path]:
    """The committed schema files that differ from what the types generate (empty when all is in order)."""
    return [path for path, text in schema_files().items()
            if not path.exists() or path.read_text(encoding="utf-8") != text]


def write_schemas() -> list[Path]:
    """Write every schema file the types generate; returns the files that changed."""
    changed = stale_files()
    for path, text in schema_files().items():
        if path in changed:
            path.write_text(text, encoding="utf-8")
    return changed
