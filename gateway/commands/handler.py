"""Runs the platform's commands: parse, authorise, execute with a timeout, audit, reply.

Device commands act on drivers; rule commands (alarms, tickets, maintenance mode) are
handed to the rule engine, and the events it returns go into the outbox through the
pipeline, so an acknowledgement reaches the platform the way a raised alarm does. Meter
commands (a reading by hand, a meter swap, a handover snapshot) go to the energy stage,
whose readings and events take the same way out.

Commands run one at a time in the order they arrive: two writes to one point land in
the order the platform sent them, a write never races a reload, and the audit log's
order is the order things happened. Commands are rare, so one at a time costs nothing.
Nothing a payload contains can raise into the daemon: every failure becomes a refused
or failed outcome, an audit line and (when the command had an id) a reply.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from drivers.base import Driver, DriverError
from gateway.batch import Batch, Event
from gateway.commands.access import Caller, CommandAccess
from gateway.commands.audit import AuditEntry, AuditLog, iso_now
from gateway.commands.authorise import Refused, known, shelve_until, writable_driver
from gateway.commands.models import (
    AckAlarmCommand,
    AlarmServiceCommand,
    AnyCommand,
    DeviceStatusCommand,
    MaintenanceCommand,
    MeterCommand,
    MeterReadingCommand,
    MeterReplaceCommand,
    MeterSnapshotCommand,
    Rejected,
    ReloadCommand,
    Reply,
    RuleCommand,
    ShelveAlarmCommand,
    UnshelveAlarmCommand,
    UpdateTicketCommand,
    WriteCommand,
    parse_command,
)
from gateway.config.errors import ConfigError
from gateway.config.models import SiteConfig
from gateway.health import DeviceHealth
from gateway.sinks.contract import iso_utc

log = structlog.get_logger(__name__)

WRITE_TIMEOUT = 15.0  # seconds: a device's timeout times its retries, with room to spare
RELOAD_TIMEOUT = 60.0  # seconds to load the files and restart every driver
CLOSE_TIMEOUT = 2.0  # seconds stop() waits for a command in flight
REMEMBERED_REPLIES = 1000  # replies kept by request id, so a redelivered command is not rerun


class RuleCommands(Protocol):
    """The rule engine as commands use it (rules/engine/engine.py `RuleEngine`).

    Every method returns the events it caused; a refusal is a ValueError whose text is
    written for the operator.
    """

    def acknowledge(self, alarm_id: str, by: str, comment: str | None = None) -> list[Event]: ...

    def shelve(self, alarm_id: str, by: str, *, until: float,
               reason: str | None = None) -> list[Event]: ...

    def unshelve(self, alarm_id: str, by: str) -> list[Event]: ...

    def set_in_service(self, alarm_id: str, in_service: bool, by: str,
                       comment: str | None = None) -> list[Event]: ...

    def update_ticket(self, ticket_id: str, step: str, by: str, *, note: str = "",
                      owner: str | None = None, backup: str | None = None) -> list[Event]: ...

    def set_maintenance(self, device: str, on: bool, by: str, *, duration: float | None = None,
                        reason: str | None = None) -> list[Event]: ...

    def alarm(self, alarm_id: str) -> dict[str, Any]: ...

    def tickets(self) -> list[dict[str, Any]]: ...


class EnergyCommands(Protocol):
    """The energy stage as commands use it (gateway/energy/stage.py `EnergyStage`).

    A refusal is a ValueError whose text is written for the operator; `at` is epoch
    seconds, None for now.
    """

    def manual_reading(self, meter: str, value: float, by: str, *, point: str | None = None,
                       at: float | None = None) -> list[Batch | Event]: ...

    def replace_meter(self, meter: str, old_final: float, new_initial: float, by: str, *,
                      point: str | None = None, at: float | None = None) -> list[Event]: ...

    def snapshot(self, household: str, by: str, at: float | None = None) -> dict[str, Any]: ...


class EventSink(Protocol):
    """Where the engine's events go: the pipeline (gateway/pipeline.py), into the outbox."""

    def emit_event(self, event: Event) -> None: ...

    def emit_measured(self, items: list[Batch | Event]) -> None: ...


class CommandTarget(Protocol):
    """What commands act on: the running gateway (gateway/daemon.py).

    `rules` is None on a gateway without a rule engine: rule commands are refused there.
    """

    config: SiteConfig
    drivers: list[Driver]
    health: dict[str, DeviceHealth]
    rules: RuleCommands | None
    pipeline: EventSink

    async def reload(self, config: SiteConfig) -> dict[str, object]: ...


class Connection(Protocol):
    """The upstream MQTT connection commands arrive on and replies leave by."""

    def subscribe(self, topic: str, handler: Callable[[str, bytes], Awaitable[None] | None],
                  qos: int = 1) -> None: ...

    async def publish_now(self, topic: str, payload: bytes, qos: int = 1) -> bool: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a command ended; `value` is what the audit log keeps as the command's "what"."""

    outcome: Literal["accepted", "refused", "failed"]
    reason: str | None = None
    result: dict[str, Any] | None = None
    value: Any = None


class CommandHandler:
    """Subscribes to `commands_topic`, answers on `reply_topic(id)`
    (`<prefix>/<site>/<gateway>/commands` and `.../replies/<id>`, docs/upstream.md).

    `via` names the connection commands arrive on (the MQTT user, else the client id):
    MQTT 3.1.1 does not tell a subscriber who published, so a command without "by" is
    audited as coming from that connection, whose broker ACL decides who may publish.
    With `access` restricted (upstream.commands.allow), commands are also taken on
    `<commands_topic>/<MQTT user>`, the sender named by the topic (access.py), and each
    kind of command only from the senders its list names.
    """

    def __init__(
        self, target: CommandTarget, connection: Connection | None, audit: AuditLog, *,
        commands_topic: str = "", reply_topic: Callable[[str], str] = str, via: str = "local",
        write_timeout: float = WRITE_TIMEOUT,
        load: Callable[[Any], SiteConfig] | None = None,
        clock: Callable[[], float] = time.time,
        access: CommandAccess | None = None,
    ) -> None:
        self.target = target
        self.access = access or CommandAccess(None, commands_topic)
        self.connection = connection
        self.audit = audit
        self.commands_topic = commands_topic
        self.reply_topic = reply_topic
        self.via = via
        self.write_timeout = write_timeout
        self._load = load
        self._clock = clock  # judges a shelve's `until`; the engine keeps its own clock
        self._lock = asyncio.Lock()
        # (sender, request id) -> its reply: a redelivery is answered, never run twice
        self._answered: OrderedDict[tuple[str, str], Reply] = OrderedDict()
        self._closing = False
        self._audit_error: str | None = None  # set while the audit log cannot be written

    def attach(self) -> None:
        """Subscribe on the upstream connection (made again by it on every reconnect)."""
        if self.connection is None:
            raise RuntimeError("commands have no upstream connection to subscribe on")
        self.connection.subscribe(self.commands_topic, self.on_message)
        if self.access.restricted:  # one topic per sender, each kept to its sender by the ACL
            self.connection.subscribe(f"{self.commands_topic}/+", self.on_message)
        log.info("accepting commands", topic=self.commands_topic, audit=str(self.audit.path),
                 senders="per kind, by topic" if self.access.restricted else "any")

    def caller_of(self, topic: str) -> Caller:
        """Who sent a command on `topic`: the MQTT user its last level names, or nobody we
        know (the plain commands topic: our own connection's name)."""
        prefix = f"{self.commands_topic}/"
        if topic.startswith(prefix) and "/" not in topic[len(prefix):] and topic[len(prefix):]:
            return Caller("mqtt", topic[len(prefix):])
        return Caller("upstream", self.via)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """The subscription's handler: run the command and publish its reply."""
        reply = await self.handle(payload, caller=self.caller_of(topic))
        if reply is None:
            return
        topic = self.reply_topic(reply.id)
        if self.connection is None or not await self.connection.publish_now(topic, reply.payload(), qos=1):
            log.warning("command reply not confirmed by the broker", request_id=reply.id, topic=topic)

    async def handle(
        self, payload: bytes, via: str | None = None, *, caller: Caller | None = None
    ) -> Reply | None:
        """Run one command and audit it; the reply to send, None when it had no usable id.

        `caller` is who sent it (access.py); without one, `via` names it (`cli:<user>`,
        else a connection), by default the upstream connection. A command without "by" is
        audited as coming from the caller. A caller the allow lists do not name for the
        command's kind is refused before anything else is looked at, and audited.
        """
        caller = caller or Caller.of_via(via or self.via)
        via = caller.via
        async with self._lock:
            if self._closing:
                log.warning("command ignored: the gateway is stopping", bytes=len(payload))
                return None
            parsed = parse_command(payload)
            denied = self.access.refusal(parsed.type, caller)
            if denied is None and not isinstance(parsed, Rejected) and (via, parsed.id) in self._answered:
                # A redelivery (QoS 1 DUP, a platform retry): answer again, never run twice.
                log.info("repeated command answered again", request_id=parsed.id, via=via)
                return self._answered[(via, parsed.id)]
            if denied is not None:  # the sender may not: nothing of the command is run
                request_id, kind, by = _request_of(parsed)
                target, value = None, None
                if not isinstance(parsed, Rejected):
                    target, value = self._target(parsed), _audited_value(parsed)
                done = Outcome("refused", denied)
            elif isinstance(parsed, Rejected):
                request_id, kind, by, target, value = parsed.request_id, parsed.type, parsed.by, None, None
                done = Outcome("refused", parsed.reason)
            else:
                request_id, kind, by = parsed.id, parsed.type, parsed.by
                target, value = self._target(parsed), _audited_value(parsed)
                done = await self._run(parsed, by or via)
                value = done.value if done.value is not None else value
            entry = AuditEntry(
                who=by or via, outcome=done.outcome, request_id=request_id, type=kind,
                target=target, value=value, reason=done.reason, via=via,
            )
            await self._audit(entry)
            seq, head = self.audit.count, self.audit.head  # the chain head, kept in the journal too
            if self._closing:  # close() gave up waiting for this command: close the log now
                await asyncio.to_thread(self.audit.close)
        log.info(
            "command", request_id=request_id, type=kind, target=target, who=entry.who, via=via,
            outcome=done.outcome, reason=done.reason, audit_seq=seq, audit_head=head,
        )
        if request_id is None:
            return None
        reply = Reply(
            id=request_id, ok=done.outcome == "accepted", error=done.reason,
            result=done.result, ts=iso_now(),
        )
        if not isinstance(parsed, Rejected) and denied is None:
            self._answered[(via, request_id)] = reply
            while len(self._answered) > REMEMBERED_REPLIES:
                self._answered.popitem(last=False)
        return reply

    async def close(self) -> None:
        """Refuse new commands, give one in flight a moment, close the audit log.

        A command still running after CLOSE_TIMEOUT (a write to a device that does not
        answer) keeps the log open and closes it once its own line is written: stopping
        the drivers makes it fail promptly, and its outcome is audited all the same.
        """
        self._closing = True
        try:
            await asyncio.wait_for(self._lock.acquire(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("a command was still running at stop", timeout=CLOSE_TIMEOUT)
            return
        try:
            await asyncio.to_thread(self.audit.close)
        finally:
            self._lock.release()

    # --- execution -------------------------------------------------------------------

    async def _run(self, command: AnyCommand, who: str) -> Outcome:
        """`who`: the operator the engine records (the command's `by`, else the connection)."""
        try:
            if isinstance(command, WriteCommand):
                return await self._write(command)
            if isinstance(command, DeviceStatusCommand):
                return self._device_status(command)
            if isinstance(command, ReloadCommand):
                return await self._reload()
            if isinstance(command, MeterReadingCommand | MeterReplaceCommand | MeterSnapshotCommand):
                return self._meter_command(command, who)
            return self._rule_command(command, who)
        except Refused as exc:
            return Outcome("refused", str(exc))
        except Exception as exc:  # a bug must cost one command, never the daemon
            log.exception("command failed unexpectedly", request_id=command.id)
            return Outcome("failed", f"internal error: {exc!r}")

    async def _write(self, command: WriteCommand) -> Outcome:
        if self._audit_error is not None:
            raise Refused(f"writes are refused while the audit log cannot be written ({self._audit_error})")
        driver = writable_driver(self.target.config, self.target.drivers, command)
        extra = {} if command.priority is None else {"priority": command.priority}
        try:
            await asyncio.wait_for(
                driver.write(command.point, command.value, **extra), self.write_timeout
            )
        except DriverError as exc:
            # bad_request: the driver refused before sending anything; the rest reached the device
            return Outcome("refused" if exc.quality == "bad_request" else "failed", str(exc))
        except TimeoutError:
            return Outcome(
                "failed",
                f"{command.device} did not complete the write within {self.write_timeout:g} s; "
                "it may or may not have landed",
            )
        result = {"device": command.device, "point": command.point, "value": command.value, **extra}
        return Outcome("accepted", result=result)

    def _device_status(self, command: DeviceStatusCommand) -> Outcome:
        config = self.target.config
        if not any(d.id == command.device for d in config.devices):
            raise Refused(f"unknown device {command.device!r}{known(d.id for d in config.devices)}")
        driver = next((d for d in self.target.drivers if d.device.id == command.device), None)
        health = self.target.health.get(command.device)
        if driver is None or health is None:
            raise Refused(f"device {command.device} is disabled in the configuration")
        return Outcome("accepted", result={
            "device": command.device, **health.snapshot(), "requests": driver.stats(),
        })

    async def _reload(self) -> Outcome:
        source = self.target.config.source
        if source is None:
            raise Refused("the configuration was not loaded from a file; there is nothing to reload")
        load = self._load or _load_site
        try:
            config = await asyncio.to_thread(load, source)
        except ConfigError as exc:
            errors = [str(issue) for issue in exc.issues]
            return Outcome("refused", str(exc), result={"errors": errors})
        except OSError as exc:
            raise Refused(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            summary = await asyncio.wait_for(self.target.reload(config), RELOAD_TIMEOUT)
        except ValueError as exc:
            raise Refused(f"the configuration is valid but cannot run: {exc}") from None
        except TimeoutError:
            return Outcome("failed", f"the drivers did not restart within {RELOAD_TIMEOUT:g} s")
        return Outcome("accepted", result=dict(summary), value=dict(summary))

    def _rule_command(self, command: RuleCommand, who: str) -> Outcome:
        """Hand an alarm, ticket or maintenance command to the engine; its events go out.

        Called on the event loop, like the engine's own polls and ticks, so a command
        never interleaves with an evaluation, and its events enter the outbox right after
        the engine made them: one alarm's states stay in the order they happened.
        """
        if self._audit_error is not None:
            raise Refused(
                f"alarm and ticket commands are refused while the audit log cannot be written "
                f"({self._audit_error})"
            )
        rules = getattr(self.target, "rules", None)
        if rules is None:
            raise Refused(
                "this gateway runs no rules: it has no alarms, tickets or maintenance modes"
            )
        value = None
        until = None
        if isinstance(command, ShelveAlarmCommand):
            until = shelve_until(command, self._clock())
            # the audit keeps the end the gateway computed, not only the duration asked for
            value = {**(_audited_value(command) or {}), "until": iso_utc(until)}
        try:
            events = _call_engine(rules, command, who, until)
        except ValueError as exc:  # the engine's refusals: unknown id, a step the state forbids
            raise Refused(str(exc)) from None
        for event in events:
            self.target.pipeline.emit_event(event)
        log.debug("rule command events emitted", request_id=command.id, events=len(events),
                  types=[e.type for e in events])
        return Outcome("accepted", result=self._rule_result(rules, command, events), value=value)

    def _rule_result(
        self, rules: RuleCommands, command: RuleCommand, events: list[Event]
    ) -> dict[str, Any] | None:
        """What the reply carries: the alarm's state, the ticket's, or the device's mode.

        The command was done and its events are in the outbox whatever happens here, so
        a view that fails costs the reply its result, not the command its outcome.
        """
        try:
            if isinstance(command, UpdateTicketCommand):
                return _ticket_state(rules, command.ticket, events)
            if isinstance(command, MaintenanceCommand):
                return _maintenance_state(command, events)
            return rules.alarm(command.alarm)
        except Exception as exc:
            log.warning("rule command done, but its result could not be read",
                        request_id=command.id, type=command.type, error=repr(exc))
            return None

    def _meter_command(self, command: MeterCommand, who: str) -> Outcome:
        """Hand a reading, a swap or a snapshot to the energy stage; its output goes out.

        On the event loop like every poll the stage takes, so an entry never interleaves
        with a reading of the same meter; the readings and rollups it returns enter the
        outbox (history, InfluxDB, upstream) like polled ones.
        """
        if self._audit_error is not None:
            raise Refused(f"meter entries are refused while the audit log cannot be written "
                          f"({self._audit_error})")
        energy: EnergyCommands | None = getattr(self.target, "energy", None)
        if energy is None:
            raise Refused("energy is not running on this gateway: no meter entries can be kept")
        try:
            if isinstance(command, MeterSnapshotCommand):
                snapshot = energy.snapshot(command.household, who)
                readings = [{"meter": m.get("meter"), "point": m.get("point"),
                             "reading": m.get("reading")} for m in snapshot.get("meters", [])]
                # the audit log keeps the readings too: a handover record must be traceable
                return Outcome("accepted", result=_snapshot_result(snapshot),
                               value={"meters": readings})
            if isinstance(command, MeterReadingCommand):
                items: list[Batch | Event] = energy.manual_reading(
                    command.meter, command.value, who, point=command.point, at=command.at)
            else:
                items = list(energy.replace_meter(command.meter, command.old_final,
                                                  command.new_initial, who,
                                                  point=command.point, at=command.at))
        except ValueError as exc:  # the stage's refusals: unknown meter, a reading going back
            raise Refused(str(exc)) from None
        self.target.pipeline.emit_measured(items)  # the rules see a manual reading's rollups
        return Outcome("accepted", result=_meter_result(command, items))

    async def _audit(self, entry: AuditEntry) -> None:
        try:
            await asyncio.to_thread(self.audit.append, entry)
        except (OSError, RuntimeError) as exc:
            self._audit_error = str(exc)
            log.error("audit log not written", path=str(self.audit.path), error=str(exc),
                      request_id=entry.request_id, outcome=entry.outcome)
        else:
            self._audit_error = None

    def _target(self, command: AnyCommand) -> str | None:
        """What the command acts on, as the audit log names it."""
        if isinstance(command, WriteCommand):
            return f"{command.device}.{command.point}"
        if isinstance(command, DeviceStatusCommand | MaintenanceCommand):
            return command.device
        if isinstance(command, UpdateTicketCommand):
            return command.ticket
        if isinstance(command, ReloadCommand):
            return str(self.target.config.source or "config")
        if isinstance(command, MeterSnapshotCommand):
            return command.household
        if isinstance(command, MeterReadingCommand | MeterReplaceCommand):
            return command.meter if command.point is None else f"{command.meter}.{command.point}"
        return command.alarm


def _request_of(parsed: AnyCommand | Rejected) -> tuple[str | None, str | None, str | None]:
    """The request id, type and `by` of a command or a refused payload, for the audit."""
    if isinstance(parsed, Rejected):
        return parsed.request_id, parsed.type, parsed.by
    return parsed.id, parsed.type, parsed.by


def _call_engine(
    rules: RuleCommands, command: RuleCommand, who: str, until: float | None
) -> list[Event]:
    """One engine call per command; `until`: a shelve's end, already judged."""
    if isinstance(command, AckAlarmCommand):
        return rules.acknowledge(command.alarm, who, command.comment)
    if isinstance(command, ShelveAlarmCommand):
        assert until is not None
        return rules.shelve(command.alarm, who, until=until, reason=command.reason)
    if isinstance(command, UnshelveAlarmCommand):
        return rules.unshelve(command.alarm, who)
    if isinstance(command, AlarmServiceCommand):
        return rules.set_in_service(command.alarm, command.in_service, who, command.comment)
    if isinstance(command, UpdateTicketCommand):
        return rules.update_ticket(command.ticket, command.step, who, note=command.note,
                                   owner=command.owner, backup=command.backup)
    return rules.set_maintenance(command.device, command.on, who, duration=command.for_,
                                 reason=command.reason)


def _audited_value(command: AnyCommand) -> Any:
    """The command's "what" for the audit log: a write's value; a rule command's own fields
    (the step, the shelve's length, the comment), so the log says what was asked of it."""
    if isinstance(command, WriteCommand):
        return command.value
    if isinstance(command, DeviceStatusCommand | ReloadCommand):
        return None
    skip = {"id", "type", "by", "alarm", "ticket", "device", "meter", "point", "household"}
    fields = command.model_dump(by_alias=True, exclude_none=True, exclude=skip)
    if isinstance(command, ShelveAlarmCommand) and command.until is not None:
        fields["until"] = iso_utc(command.until)
    if isinstance(command, MeterReadingCommand | MeterReplaceCommand) and command.at is not None:
        fields["at"] = iso_utc(command.at)
    return {k: v for k, v in fields.items() if v != ""} or None


def _ticket_state(rules: RuleCommands, ticket_id: str, events: list[Event]) -> dict[str, Any] | None:
    """The ticket as the command left it: its newest `ticket_state` among the events (a
    closed or cancelled ticket is gone from the engine's view, but its state was emitted),
    else the engine's view of it."""
    for event in reversed(events):
        if event.type == "ticket_state" and event.body.get("ticket") == ticket_id:
            return dict(event.body)
    return next((t for t in rules.tickets() if t.get("ticket") == ticket_id), None)


def _maintenance_state(command: MaintenanceCommand, events: list[Event]) -> dict[str, Any]:
    """The device's mode: the `maintenance` event the engine emitted (with its end), else
    what was asked."""
    for event in reversed(events):
        if event.type == "maintenance" and event.device == command.device:
            return {"device": command.device, **event.body}
    return {"device": command.device, "maintenance": command.on}


def _meter_result(command: MeterReadingCommand | MeterReplaceCommand,
                  items: list[Batch | Event]) -> dict[str, Any]:
    """What a reading or swap did: the meter, the counter and the value entered, with the
    replacement's event (what was credited, the total now) when there is one."""
    result: dict[str, Any] = {"meter": command.meter}
    for item in items:
        if isinstance(item, Batch) and item.device == command.meter and len(item.points) == 1:
            result.update(point=item.points[0], value=item.values[0], at=iso_utc(item.ts))
            break
    for item in items:
        if isinstance(item, Event) and item.type == "meter_event" and item.device == command.meter:
            body = {k: v for k, v in item.body.items() if k != "ts"}
            result.update(body, at=iso_utc(item.ts))
    if isinstance(command, MeterReadingCommand):
        result.setdefault("value", command.value)
    if command.point is not None:
        result.setdefault("point", command.point)
    return result


def _snapshot_result(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A handover snapshot with its times as ISO-8601 (the reply and audit speak JSON)."""
    meters = [{**m, "at": iso_utc(m["at"]) if m.get("at") is not None else None}
              for m in snapshot.get("meters", [])]
    out = {**snapshot, "meters": meters}
    if isinstance(snapshot.get("ts"), int | float):
        out["ts"] = iso_utc(snapshot["ts"])
    return out


def _load_site(path: Any) -> SiteConfig:
    from gateway.config.loader import load_site

    return load_site(path)
