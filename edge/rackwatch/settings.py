"""The base of every settings class, and how a mistake in one is told to the person who made it.

Each part of the rack declares its own settings next to the code that uses them (``RepSettings`` in
``reps.py``, ``PanelSettings`` in ``panel.py`` ...) as a :class:`Settings` model: a field per setting, its
default, its allowed range (``Field(ge=..., le=...)``) and, where settings depend on each other, a model
validator. :mod:`rackwatch.config` stacks them into the one tree the config file fills.

The rules are strict on purpose, because a config file is typed by hand on a Pi over SSH and a typo must stop
the rack at start rather than quietly change how it judges: an unknown key is an error, ``"5"`` is not a whole
number, ``true`` is not a number, ``nan`` and ``inf`` are refused, and a settings object never changes once
made. A whole number is fine where a number is wanted (``fps = 15`` for ``15.0``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """The configuration is wrong; the message says where and how to fix it."""


class Settings(BaseModel):
    """A group of settings: unknown keys forbidden, types strict, no NaN or infinity, frozen once made."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


_KINDS = {
    "int_type": "a whole number", "int_from_float": "a whole number", "int_parsing": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "text",
    "list_type": "a list", "tuple_type": "a list",
}


def problems(error: ValidationError, model: type[BaseModel], table: tuple[str, ...] = ()) -> list[str]:
    """One plain sentence per problem pydantic found in ``model``, each naming the table and the key.

    ``table`` is where ``model`` sits in the config file (``("analysis", "reps")`` for ``[analysis.reps]``); the
    error's own location continues from there. The sentences say what was wrong and what would be right.
    """
    lines = []
    for item in error.errors(include_url=False):
        # Walk the location down the tree of tables: ("panel", "pins", "up") is the key "up" of [panel.pins];
        # a location that ends on a table (a table given as a single value, a rule between its settings) has
        # no key. List positions are left out: the key names the list.
        owner, tables, key = model, table, None
        for part in (str(p) for p in item["loc"] if not isinstance(p, int)):
            field = owner.model_fields.get(part)
            inner = _settings_class(field.annotation) if field is not None else None
            if inner is None:
                key = part
                break
            owner, tables = inner, tables + (part,)
        lines.append(_sentence(item, _table_name(tables), key, owner))
    return lines


def _settings_class(annotation: Any) -> type[BaseModel] | None:
    """The settings class a field holds (``PanelSettings | None`` counts), or ``None`` for a plain value."""
    for kind in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


def _table_name(parts: tuple[str, ...]) -> str:
    return f"[{'.'.join(parts)}]" if parts else "the top level"


def _sentence(item: dict, where: str, key: str | None, owner: type[BaseModel] | None) -> str:
    kind, value, ctx = item["type"], _shown(item.get("input")), item.get("ctx") or {}
    if kind == "extra_forbidden":
        known = ", ".join(owner.model_fields) if owner is not None else ""
        if where == "the top level":
            return f"there is no table [{key}]. Known tables: {known}."
        return f"{where} has no setting {key!r}. Known settings: {known}."
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where} must be a table of settings, not {value}."
    if kind == "value_error":
        reason = str(ctx.get("error", item["msg"]))
        return f"{where} {key} {reason}." if key else f"{where}: {reason}."
    what = f"{where} {key}" if key else where
    field = owner.model_fields.get(key) if owner is not None and key else None
    if kind in _KINDS:
        wanted = _KINDS[kind]
        if kind == "finite_number":
            return f"{what} must be {wanted} (nan and inf are not settings), not {value}."
        if kind != "string_type" and field is not None and type(None) in getattr(field.annotation, "__args__", ()):
            wanted += ' or "none"'   # TOML has no null: "none" stands for it (a part not fitted, a timer off)
        return f"{what} must be {wanted}, not {value}.{_range_hint(field)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{what} must be {_range(field) or item['msg'].lower()}, not {value}."
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return f"{what} must not be empty."
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return f"{what} {value} is the wrong length: {item['msg'].lower()}."
    if kind == "literal_error":
        return f"{what} must be {ctx.get('expected', 'one of the allowed values')}, not {value}."
    return f"{what}: {item['msg']}, not {value}."


def _shown(value: Any) -> str:
    """A value as it was written in the TOML file: ``true``, ``"five"``, ``nan``, ``100000``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return repr(value)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _range(field: Any) -> str:
    """``between 1 and 65535``, ``at least 0``, ``more than 0`` ...: a field's declared range in words."""
    if field is None:
        return ""
    low = high = None
    for rule in field.metadata:
        for name, words in (("ge", "at least"), ("gt", "more than")):
            if getattr(rule, name, None) is not None:
                low = (words, getattr(rule, name))
        for name, words in (("le", "at most"), ("lt", "less than")):
            if getattr(rule, name, None) is not None:
                high = (words, getattr(rule, name))
    if low and high:
        if low[0] == "at least" and high[0] == "at most":
            return f"between {_number(low[1])} and {_number(high[1])}"
        return f"{low[0]} {_number(low[1])} and {high[0]} {_number(high[1])}"
    rule = low or high
    return f"{rule[0]} {_number(rule[1])}" if rule else ""


def _range_hint(field: Any) -> str:
    words = _range(field)
    return f" It must be {words}." if words else ""


__all__ = ["ConfigError", "Settings", "problems"]
