"""What the platform may send on the commands topic, what it gets back, and the parsing
that turns a payload into one command or a refusal that says why.

Parsing never raises: a payload from the network is judged, not trusted. Every model
forbids unknown fields, so a platform that misspells `value` hears about it instead of
having a command half-applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from gateway.sinks.contract import dumps

MAX_PAYLOAD = 64 * 1024  # bytes; a command is a few hundred
SUPPORTED = ("write", "device_status", "reload")
NOT_YET = ("ack_alarm", "shelve_alarm", "update_ticket")  # the rule engine owns alarms and tickets
COMMAND_TYPES = SUPPORTED + NOT_YET

# A request id becomes a topic level of the reply: no separators, wildcards or controls.
ID_PATTERN = r"^[^/+#\x00-\x1f]{1,128}$"
RequestId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Who = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Value = StrictBool | StrictInt | StrictFloat | StrictStr


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RequestId
    by: Who | None = None  # the platform's operator, for the audit log


class WriteCommand(_Command):
    """Write one point of one device; BACnet points may name a command priority."""

    type: Literal["write"]
    device: Name
    point: Name
    value: Value
    priority: Annotated[StrictInt, Field(ge=1, le=16)] | None = None


class DeviceStatusCommand(_Command):
    """Ask for one device's health and request statistics now."""

    type: Literal["device_status"]
    device: Name


class ReloadCommand(_Command):
    """Load the configuration files again; apply them when valid."""

    type: Literal["reload"]


Command = Annotated[
    WriteCommand | DeviceStatusCommand | ReloadCommand, Field(discriminator="type")
]
_COMMAND: TypeAdapter[WriteCommand | DeviceStatusCommand | ReloadCommand] = TypeAdapter(Command)


class Reply(BaseModel):
    """The answer on `<base>/replies/<id>`: ok, or an error that says why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    ok: bool
    error: str | None = None
    result: dict[str, Any] | None = None
    ts: str

    def payload(self) -> bytes:
        return dumps(self.model_dump(exclude_none=True))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A payload that is not a command we run; `request_id` is None when no reply can go."""

    reason: str
    request_id: str | None = None
    type: str | None = None
    by: str | None = None


Parsed = WriteCommand | DeviceStatusCommand | ReloadCommand | Rejected
_ID_IN_TEXT = re.compile(rb'"id"\s*:\s*"([^"\\/+#\x00-\x1f]{1,128})"')


def parse_command(payload: bytes) -> Parsed:
    """One command, or why the payload is refused (with its id when it had a usable one)."""
    if len(payload) > MAX_PAYLOAD:
        return Rejected(
            f"payload is {len(payload)} bytes; commands are at most {MAX_PAYLOAD} bytes",
            _id_in_text(payload),
        )
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejected(f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except ValueError as exc:
        return Rejected(f"payload is not JSON: {exc}", _id_in_text(payload))
    if not isinstance(data, dict):
        return Rejected(f"a command is a JSON object, not {type(data).__name__}")
    request_id = data.get("id")
    usable_id = request_id if isinstance(request_id, str) and re.match(ID_PATTERN, request_id) else None
    kind = data.get("type") if isinstance(data.get("type"), str) else None
    by = data["by"][:128] if isinstance(data.get("by"), str) else None  # audited even if refused
    if usable_id is None:
        why = "missing" if request_id is None else "not 1-128 characters without / + # or controls"
        return Rejected(f"id is {why}; a command needs a request id to reply to", None, kind, by)
    if kind not in COMMAND_TYPES:
        what = "missing" if "type" not in data else f"{data['type']!r} is not known"
        return Rejected(
            f"type {what}; one of {', '.join(COMMAND_TYPES)}", usable_id, kind, by
        )
    if kind in NOT_YET:
        return Rejected(
            f"{kind} is not supported until the rule engine lands (alarms and tickets are "
            "not managed by this gateway yet)", usable_id, kind, by,
        )
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as exc:
        return Rejected(describe(exc, kind), usable_id, kind, by)


def _id_in_text(payload: bytes) -> str | None:
    """A well-formed "id" near the start of a payload that could not be parsed: a truncated
    or oversized command still earns its sender a reply that says what was wrong."""
    found = _ID_IN_TEXT.search(payload[:4096])
    return found.group(1).decode("utf-8", "replace") if found else None


def describe(error: ValidationError, kind: str) -> str:
    """Pydantic's errors as one sentence per field: what is wrong, what would be right."""
    model = {"write": WriteCommand, "device_status": DeviceStatusCommand, "reload": ReloadCommand}
    fields = ", ".join(model[kind].model_fields) if kind in model else ""
    seen: dict[str, str] = {}
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if part != kind]
        field = loc[0] if loc else "command"
        if field in seen:
            continue  # a union's members each complain; the first says enough
        if item["type"] == "extra_forbidden":
            seen[field] = f"unknown field {field!r}; {kind} takes {fields}"
        elif item["type"] == "missing":
            seen[field] = f"{field} is missing"
        elif field == "value":
            seen[field] = "value must be a number, true/false or text"
        else:
            seen[field] = f"{field}: {item['msg']}"
    return "; ".join(seen.values())
