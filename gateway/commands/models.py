"""What the platform may send on the commands topic, what it gets back, and the parsing
that turns a payload into one command or a refusal that says why.

Device commands (write, device_status, reload) act on drivers and the configuration;
rule commands (ack_alarm, shelve_alarm, unshelve_alarm, alarm_service, update_ticket,
maintenance) act on the rule engine's alarms and tickets; meter commands (meter_reading,
meter_replace, meter_snapshot) enter what only a person can see on a meter's dial into
the energy stage (docs/energy.md).

Parsing never raises: a payload from the network is judged, not trusted. Every model
forbids unknown fields, so a platform that misspells `value` hears about it instead of
having a command half-applied.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from gateway.config.types import parse_duration
from gateway.sinks.contract import dumps

MAX_PAYLOAD = 64 * 1024  # bytes; a command is a few hundred
DEVICE_COMMANDS = ("write", "device_status", "reload")
# Alarms and tickets belong to the rule engine; these reach it (gateway/commands/handler.py).
RULE_COMMANDS = (
    "ack_alarm", "shelve_alarm", "unshelve_alarm", "alarm_service", "update_ticket", "maintenance",
)
# Readings taken by hand, meter swaps, handover snapshots: the energy stage's entries.
METER_COMMANDS = ("meter_reading", "meter_replace", "meter_snapshot")
COMMAND_TYPES = DEVICE_COMMANDS + RULE_COMMANDS + METER_COMMANDS
SHELVE_MAX = 7 * 86400.0  # seconds; longer than a week is out of service, not shelved
TICKET_STEPS = ("dispatch", "arrive", "progress", "resolve", "follow_up", "close", "cancel", "note")

# A request id becomes a topic level of the reply: no separators, wildcards or controls.
ID_PATTERN = r"^[^/+#\x00-\x1f]{1,128}$"
RequestId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Who = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Value = StrictBool | StrictInt | StrictFloat | StrictStr
# Alarm ids are <device>.<rule>, so longer than a device id may be.
AlarmId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]
TicketId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[StrictStr, StringConstraints(max_length=2000)]  # comments, reasons, notes
Household = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]  # 3-2-1201


def _duration(value: Any) -> float:
    """"2h", "90m", "1d" or a number of seconds; text such as "2 hours" is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError('expected a duration such as "30m", "2h" or "1d", or seconds')
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def _shelve_length(seconds: float) -> float:
    if seconds > SHELVE_MAX:
        raise ValueError(
            f"{seconds / 86400:g} days is longer than a shelve may last ({SHELVE_MAX / 86400:g} "
            "days); take the alarm out of service (alarm_service) for longer"
        )
    return seconds


def _iso_time(value: Any) -> float:
    """An ISO-8601 time with its offset (Z, +08:00) → seconds since the epoch.

    A time without an offset is refused, not read as UTC: a platform in China that sends
    local time would otherwise shelve an alarm eight hours off.
    """
    if not isinstance(value, str):
        raise ValueError('expected an ISO-8601 time such as "2026-11-23T18:00:00+08:00"')
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f'{value!r} is not an ISO-8601 time such as "2026-11-23T18:00:00+08:00"'
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; add Z (UTC) or an offset such as +08:00")
    return when.timestamp()


Duration = Annotated[float, BeforeValidator(_duration)]
ShelveDuration = Annotated[float, BeforeValidator(_duration), AfterValidator(_shelve_length)]
IsoTime = Annotated[float, BeforeValidator(_iso_time)]


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


class AckAlarmCommand(_Command):
    """The operator has seen the alarm (ISA-18.2 acknowledge)."""

    type: Literal["ack_alarm"]
    alarm: AlarmId
    comment: Text | None = None


class ShelveAlarmCommand(_Command):
    """Hide an alarm for a while: `for` a duration or `until` a time, never both.

    Capped at SHELVE_MAX: a shelved alarm is forgotten by people, so a long one must be
    a deliberate out-of-service. `until` is checked against the clock when it runs.
    """

    type: Literal["shelve_alarm"]
    alarm: AlarmId
    for_: ShelveDuration | None = Field(default=None, alias="for")
    until: IsoTime | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _one_end(self) -> ShelveAlarmCommand:
        if self.for_ is not None and self.until is not None:
            raise ValueError("give for (a duration) or until (a time), not both")
        if self.for_ is None and self.until is None:
            raise ValueError(
                'shelve_alarm needs for (a duration such as "2h") or until (an ISO-8601 time)'
            )
        return self


class UnshelveAlarmCommand(_Command):
    """End a shelve before its time."""

    type: Literal["unshelve_alarm"]
    alarm: AlarmId


class AlarmServiceCommand(_Command):
    """Take an alarm out of service (a sensor being replaced) or put it back."""

    type: Literal["alarm_service"]
    alarm: AlarmId
    in_service: StrictBool
    comment: Text | None = None


class UpdateTicketCommand(_Command):
    """Move a ticket on by one step, or add a note to its history.

    `dispatch` names who owns the ticket from now on (首问负责制), so it needs `owner`;
    owner and backup mean nothing to another step and are refused there.
    """

    type: Literal["update_ticket"]
    ticket: TicketId
    step: Literal[
        "dispatch", "arrive", "progress", "resolve", "follow_up", "close", "cancel", "note"
    ]
    note: Text = ""
    owner: Who | None = None
    backup: Who | None = None

    @model_validator(mode="after")
    def _fits_the_step(self) -> UpdateTicketCommand:
        if self.step == "dispatch" and self.owner is None:
            raise ValueError("dispatch needs owner: who takes the ticket")
        if self.step != "dispatch" and (self.owner is not None or self.backup is not None):
            raise ValueError(f"owner and backup go with step dispatch, not {self.step}")
        if self.step == "note" and not self.note.strip():
            raise ValueError("step note needs the note's text in note")
        return self


class MaintenanceCommand(_Command):
    """Put a device in maintenance mode (its alarms suppressed) or take it out.

    Without `for` the engine's default length applies: a mode always ends by itself.
    """

    type: Literal["maintenance"]
    device: Name
    on: StrictBool
    for_: Duration | None = Field(default=None, alias="for")
    reason: Text | None = None

    @model_validator(mode="after")
    def _for_only_when_on(self) -> MaintenanceCommand:
        if not self.on and self.for_ is not None:
            raise ValueError("for goes with on: true; ending maintenance takes no duration")
        return self


def _reading(value: Any) -> Any:
    """A meter reading: a finite number, never negative (a dial does not read below 0).

    JSON has no NaN, but Python's parser accepts it; true and "12.5" are refused rather
    than read as 1 and 12.5: a reading is typed on a form, and a form sends a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number, the reading on the meter's dial")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{value!r} is not a reading; a meter reads a finite number, at least 0")
    return float(value)


Reading = Annotated[float, BeforeValidator(_reading)]


class MeterReadingCommand(_Command):
    """A reading taken by hand: a meter with no network, or a check of one that has.

    `point` names the counter when the meter has several (energy_import, energy_export);
    `at` is when it was read (default: now). Stored with source `manual` and `by`.
    """

    type: Literal["meter_reading"]
    meter: Name
    value: Reading
    point: Name | None = None
    at: IsoTime | None = None


class MeterReplaceCommand(_Command):
    """A meter swapped: the old one's final reading and the new one's first, so the
    totals, the rollups and the ledger stay continuous across the swap."""

    type: Literal["meter_replace"]
    meter: Name
    old_final: Reading
    new_initial: Reading
    point: Name | None = None
    at: IsoTime | None = None


class MeterSnapshotCommand(_Command):
    """A handover (move-in, 交房) record: every meter serving the household, read now."""

    type: Literal["meter_snapshot"]
    household: Household


MeterCommand = MeterReadingCommand | MeterReplaceCommand | MeterSnapshotCommand
AlarmCommand = AckAlarmCommand | ShelveAlarmCommand | UnshelveAlarmCommand | AlarmServiceCommand
RuleCommand = AlarmCommand | UpdateTicketCommand | MaintenanceCommand
AnyCommand = WriteCommand | DeviceStatusCommand | ReloadCommand | RuleCommand | MeterCommand
Command = Annotated[AnyCommand, Field(discriminator="type")]
_COMMAND: TypeAdapter[AnyCommand] = TypeAdapter(Command)
MODELS: dict[str, type[_Command]] = {
    "write": WriteCommand, "device_status": DeviceStatusCommand, "reload": ReloadCommand,
    "ack_alarm": AckAlarmCommand, "shelve_alarm": ShelveAlarmCommand,
    "unshelve_alarm": UnshelveAlarmCommand, "alarm_service": AlarmServiceCommand,
    "update_ticket": UpdateTicketCommand, "maintenance": MaintenanceCommand,
    "meter_reading": MeterReadingCommand, "meter_replace": MeterReplaceCommand,
    "meter_snapshot": MeterSnapshotCommand,
}


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


Parsed = AnyCommand | Rejected
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
    except RecursionError:  # a few kB of "[[[[" exhausts the parser's stack
        return Rejected("payload is nested too deeply to be a command", _id_in_text(payload))
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
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as exc:
        return Rejected(describe(exc, kind), usable_id, kind, by)


def _id_in_text(payload: bytes) -> str | None:
    """A well-formed "id" near the start of a payload that could not be parsed: a truncated
    or oversized command still earns its sender a reply that says what was wrong."""
    found = _ID_IN_TEXT.search(payload[:4096])
    return found.group(1).decode("utf-8", "replace") if found else None


def takes(kind: str) -> str:
    """The fields a command type takes, as a payload spells them ("for", not "for_")."""
    model = MODELS.get(kind)
    if model is None:
        return ""
    return ", ".join(info.alias or name for name, info in model.model_fields.items())


def describe(error: ValidationError, kind: str) -> str:
    """Pydantic's errors as one sentence per field: what is wrong, what would be right."""
    seen: dict[str, str] = {}
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if part != kind]
        field = loc[0] if loc else "command"
        if field in seen:
            continue  # a union's members each complain; the first says enough
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            seen[field] = f"unknown field {field!r}; {kind} takes {takes(kind)}"
        elif item["type"] == "missing":
            seen[field] = f"{field} is missing"
        elif field == "value" and kind == "write":
            seen[field] = "value must be a number, true/false or text"
        elif field == "command":
            seen[field] = message  # the command as a whole: which fields go together
        else:
            seen[field] = f"{field}: {message}"
    return "; ".join(seen.values())
