"""The MQTT contract as files: ``asyncapi.yaml`` (topics, QoS, retain) and one JSON Schema per payload.

The schemas are data shipped with the package, so a dashboard or a test can check payloads without copying
them. Validation needs the ``jsonschema`` package (a test/dashboard dependency, not needed on the rack)::

    from rackwatch.contract import validate
    validate(event)            # picks the schema from event["type"]; raises jsonschema.ValidationError
    validate(payload, "command")
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMAS = ("rep", "set", "state", "health", "reply", "command")
BASE_URI = "https://rackwatch.example/contract/"


def schema_text(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload: ``rep``, ``set``, ``state``, ``health``, ``reply``,
    ``command`` or ``common`` (the shared definitions)."""
    return json.loads(schema_text(name))


def asyncapi_text() -> str:
    return resources.files(__name__).joinpath("asyncapi.yaml").read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def validator(name: str):
    """A ``jsonschema`` validator for one payload schema, with the shared definitions resolvable."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (BASE_URI + f"{n}.schema.json", Resource.from_contents(load_schema(n))) for n in (*SCHEMAS, "common"))
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(payload: dict[str, Any], name: str | None = None) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``payload`` fits its schema (by default ``payload["type"]``)."""
    validator(name or str(payload.get("type"))).validate(payload)
