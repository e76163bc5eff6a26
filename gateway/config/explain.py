"""Pydantic validation errors retold for a site engineer, at their place in the YAML.

Pydantic says "Input should be 'int16', 'uint16', ... [type=literal_error]" at
`('points', 'outlet_pressure', 'type')`. An engineer needs the file, line and column,
what is wrong, and what would be right: the allowed values or keys, and the one they
probably meant. This module walks the error's `loc` through the raw YAML data (to find
the position) and through the model's type annotations (to find the allowed keys and
values), and words the message. It never echoes a value under a secret-looking key.
"""

from __future__ import annotations

import difflib
import re
import types
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from gateway.config.errors import ConfigIssue, KeyPath
from gateway.config.models import ID_PATTERN, Device, Profile, Secret, SiteConfig
from gateway.config.rule_models import KEY_CONFLICT, RuleFile
from gateway.config.yaml_source import YamlDocument

# Fields the loader fills in; they are never written in YAML, so never offered as keys.
HIDDEN_KEYS: dict[type[BaseModel], frozenset[str]] = {
    SiteConfig: frozenset({"profiles", "devices", "rule_files", "source"}),
    RuleFile: frozenset({"source"}),
    Profile: frozenset({"source"}),
    Device: frozenset({"source"}),
    Secret: frozenset({"value"}),
}

SENSITIVE_KEYS = frozenset({"password", "token", "secret", "api_key", "apikey", "value"})

# What a Literal field's values are called, by (model, field) or by field name.
_NOUNS: dict[Any, str] = {
    ("ModbusPoint", "type"): "a data type",
    ("ModbusTcpConnection", "type"): "a connection type",
    "order": "a byte order",
    "table": "a register table",
    "fsync": "an fsync mode",
    "level": "a log level",
    "format": "a log format",
    "api": "an InfluxDB API version",
    "unit_as": "a way to write units",
    "qos": "an MQTT QoS level",
    "protocol": "a supported protocol",
    "severity": "a severity",
    ("TicketSpec", "kind"): "a ticket kind",
    ("TicketSpec", "priority"): "a ticket priority",
    ("TicketSpec", "grade"): "a ticket grade",
    ("Rule", "accumulate"): "a kind of counter",
    "trapped_area": "an area for the trapped-passenger clock",
}

_EXPECTED: dict[str, str] = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list (one '- ' line per item)",
    "date_type": "a date like 2024-05-31",
    "date_parsing": "a date like 2024-05-31",
    "date_from_datetime_parsing": "a date like 2024-05-31",
    "date_from_datetime_inexact": "a date like 2024-05-31 (without a time)",
    "path_type": "a file path",
}

_COMPARISONS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}

# Short reminders of what a required key is for.
_PURPOSE: dict[Any, str] = {
    "site": "the site's id and name",
    "id": "a unique name, e.g. pump_b1_1",
    "name": "a display name",
    "system": "e.g. water_supply, power, hvac",
    "points": "the registers to read",
    "address": "the register number, 0-65535",
    "profile": "the id of a profile from profiles/",
    "connection": "e.g. {type: modbus_tcp, host: 192.168.1.20}",
    "host": "the device's IP address or host name",
    "url": "e.g. http://127.0.0.1:8086",
    "type": "which kind this is",
    "severity": "critical, major, minor or warning",
    "task": "a name for the task, e.g. pump_service_2000h",
    ("Rule", "id"): "a name for the rule, e.g. low_outlet_pressure",
}


def did_you_mean(word: str, choices: list[str]) -> str:
    """'; did you mean X?' for the closest choice (ignoring case), or ''."""
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]}?" if close else ""


def visible_fields(model: type[BaseModel]) -> list[str]:
    """The keys an engineer may write for a model, in declaration order, as written
    in YAML: a field with an alias by its alias (a rule's on_delay is `for:`)."""
    hidden = HIDDEN_KEYS.get(model, frozenset())
    return [field.alias or name for name, field in model.model_fields.items() if name not in hidden]


def _field_named(model: type[BaseModel], key: str) -> Any:
    """The field a YAML key sets: by its alias, else by its name; None if there is none."""
    for name, field in model.model_fields.items():
        if key in (field.alias, name):
            return field
    return None


def describe(value: Any, *, sensitive: bool = False) -> str:
    """A value as it would be quoted back in a message; only its kind when it may be a secret."""
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if sensitive:
        return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else "a value (not shown)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return repr(value)
    return str(value)


def explain(
    error: ValidationError,
    model: type[BaseModel],
    document: YamlDocument,
    data: Any,
    *,
    prefix: KeyPath = (),
    notes: dict[KeyPath, str] | None = None,
) -> list[ConfigIssue]:
    """Issues for every error in `error`, raised validating `data` (found at `prefix` in `document`).

    `notes` adds a sentence to the message of an error at a given path (relative to `data`).
    """
    issues: list[ConfigIssue] = []
    seen: set[tuple[KeyPath, str]] = set()
    for detail in error.errors(include_url=False):
        walk = _Walk.along(tuple(detail["loc"]), model, data)
        issue = _issue(detail, walk, document, prefix)
        if notes and walk.path in notes:
            issue = ConfigIssue(issue.file, issue.line, issue.col, issue.path,
                                f"{issue.message} {notes[walk.path]}")
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            issues.append(issue)
    return issues


class _Walk:
    """Where a pydantic `loc` leads, in the raw data and in the model's annotations."""

    def __init__(self) -> None:
        self.path: KeyPath = ()  # keys and indexes that exist in the data (plus a missing last key)
        self.found = True  # the whole path exists in the data
        self.raw: Any = None  # the data at `path`
        self.annotation: Any = Any  # the annotation at `path`
        self.owner: type[BaseModel] | None = None  # the model whose field the last key is
        self.container: Any = Any  # the annotation of what holds the last key
        self.is_key = False  # the error is about a mapping key, not its value
        self.sensitive = False

    @classmethod
    def along(cls, loc: tuple[Any, ...], model: type[BaseModel], data: Any) -> _Walk:
        walk = cls()
        cursor, annotation = data, model
        for index, step in enumerate(loc):
            last = index == len(loc) - 1
            if step == "[key]":
                walk.is_key = True
                continue
            present = (isinstance(cursor, dict) and step in cursor) or (
                isinstance(cursor, list) and isinstance(step, int) and 0 <= step < len(cursor)
            )
            tag = not present and _member(annotation, step) is not annotation
            if present or (last and not tag):
                walk.container = annotation
                annotation, owner = _step(annotation, step)
                walk.owner = owner
                walk.path = (*walk.path, step)
                if isinstance(step, str) and step.lower() in SENSITIVE_KEYS:
                    walk.sensitive = True
                if present:
                    cursor = cursor[step]
                else:
                    walk.found, cursor = False, None
            else:  # a union member's tag, e.g. 'influxdb' in ('sinks', 0, 'influxdb', 'url')
                annotation = _member(annotation, step)
        walk.raw, walk.annotation = cursor, annotation
        if walk.owner is Secret or any(m is Secret for m in _members(annotation)):
            walk.sensitive = True
        return walk


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(m) for m in get_args(annotation) if m is not type(None)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _step(annotation: Any, step: Any) -> tuple[Any, type[BaseModel] | None]:
    """The annotation one key or index deeper, and the model owning that key if any."""
    for member in _members(annotation):
        field = _field_named(member, step) if _is_model(member) and isinstance(step, str) else None
        if field is not None:
            return field.annotation, member
        origin = get_origin(member)
        if origin is list and isinstance(step, int):
            return get_args(member)[0], None
        if origin is dict:
            return get_args(member)[1], None
    models = [m for m in _members(annotation) if _is_model(m)]
    return Any, models[0] if len(models) == 1 else None


def _member(annotation: Any, tag: Any) -> Any:
    """The union member a discriminator tag selects (its Tag(), or its `type` literal)."""
    union = _unwrap(annotation)
    if get_origin(union) in (Union, types.UnionType):
        for member in get_args(union):
            if get_origin(member) is Annotated and any(
                isinstance(meta, Tag) and meta.tag == tag for meta in get_args(member)[1:]
            ):
                return _unwrap(member)
    for member in _members(annotation):
        field = member.model_fields.get("type") if _is_model(member) else None
        if field is not None and tag in _literal_values(field.annotation):
            return member
    return annotation


def _literal_values(annotation: Any) -> list[Any]:
    values: list[Any] = []
    for member in _members(annotation):
        if get_origin(member) is Literal:
            values.extend(get_args(member))
    return values


def _issue(detail: Any, walk: _Walk, document: YamlDocument, prefix: KeyPath) -> ConfigIssue:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    path = walk.path
    # Quote what the engineer wrote (a duration as "0s", not 0.0), unless about a key.
    value = detail.get("input") if walk.is_key or not walk.found else walk.raw
    shown = describe(value, sensitive=walk.sensitive)
    field = path[-1] if path else None

    def at(target: KeyPath, message: str, *, key: bool = False, mapping: bool = False) -> ConfigIssue:
        full = (*prefix, *target)
        if mapping:
            line, col = document.locate_mapping(full)
        else:
            line, col = document.locate(full, key=key)
        return ConfigIssue(document.path, line, col, full, message)

    if kind == "missing":
        parent = path[:-1]
        owner_name = walk.owner.__name__ if walk.owner else None
        purpose = _PURPOSE.get((owner_name, field)) or _PURPOSE.get(str(field))
        message = f"missing required key '{field}'" + (f" ({purpose})" if purpose else "")
        return at(parent, message, mapping=True)

    if kind == "extra_forbidden":
        owner = next((m for m in _members(walk.container) if _is_model(m)), None)
        allowed = visible_fields(owner) if owner else []
        message = f"'{field}' is not a known key here"
        if allowed:
            message += f"; allowed keys: {', '.join(allowed)}" + did_you_mean(str(field), allowed)
        return at(path, message, key=True)

    if kind == KEY_CONFLICT:
        return _conflict(detail, walk, at)

    if kind == "literal_error":
        allowed = _literal_values(walk.annotation) or re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        noun = _NOUNS.get((walk.owner.__name__ if walk.owner else None, field)) or _NOUNS.get(field)
        listed = ", ".join(str(v) for v in allowed)
        head = f"{shown} is not {noun}" if noun else f"{shown} is not allowed for {field}"
        hint = did_you_mean(value, [str(v) for v in allowed]) if isinstance(value, str) else ""
        return at(path, f"{head}; expected one of {listed}{hint}")

    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        key = str(ctx.get("discriminator", "'type'")).strip("'")
        listed = ", ".join(tags)
        if kind == "union_tag_not_found":
            return at(path, f"missing required key '{key}' (one of {listed})", mapping=True)
        tag = str(ctx.get("tag", ""))
        noun = "a sink type" if path[:1] == ("sinks",) else f"a known {key}"
        return at((*path, key), f"'{tag}' is not {noun}; expected one of {listed}{did_you_mean(tag, tags)}")

    if kind in ("model_type", "model_attributes_type") and Secret in _members(walk.annotation):
        return at(path, "secrets are not written in the YAML; "
                        "use {env: VARIABLE} or {file: /path/to/secret}")

    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if value is None:
            message = f"is empty; expected {expected}"
        else:
            message = f"expected {expected}, got {shown}"
            if kind == "string_type" and isinstance(value, int | float) and not walk.sensitive:
                message += f"; put it in quotes: '{value}'"
        return at(path, message, key=walk.is_key, mapping=isinstance(value, dict))

    if kind in _COMPARISONS:
        name, words = _COMPARISONS[kind]
        return at(path, f"must be {words} {ctx.get(name)}, got {shown}")

    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == ID_PATTERN:
            message = (f"{shown} is not a valid id; use letters (Chinese too), digits, '_', '-' and '.', "
                       "starting with a letter, digit or '_', without spaces or slashes")
        else:
            message = f"{shown} does not match the pattern {ctx.get('pattern')}"
        return at(path, message, key=walk.is_key)

    if kind == "string_too_long":
        return at(path, f"is too long: at most {ctx.get('max_length')} characters", key=walk.is_key)

    message = str(detail.get("msg", "is not valid"))
    for lead in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(lead)
    if value is None and message.startswith("None is not"):
        message = "is empty; expected" + message.split("expected", 1)[-1] if "expected" in message else "is empty"
    return at(path, message, mapping=isinstance(walk.raw, dict))


def _conflict(detail: Any, walk: _Walk, at: Any) -> ConfigIssue:
    """Keys that do not go together (a rule with both when: and derive:): at the key to change
    when the model names one that was written, else at the entry."""
    key = (detail.get("ctx") or {}).get("key")
    message = str(detail["msg"])
    if key is not None and isinstance(walk.raw, dict) and key in walk.raw:
        return at((*walk.path, key), message, key=True)
    return at(walk.path, message, mapping=True)
