"""Every alarm the engine runs: one per rule with `alarm:`, hidden debouncers for rules
that open tickets without an alarm, and SLA alarms raised when a ticket runs late.

The alarms themselves are `rules/alarms`; this module decides which exist, what they
are called, and what becomes of saved state when the configuration changed (an alarm
whose rule is gone is forgotten; one whose rule was edited keeps its state under the new
definition).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from rules.alarms import Alarm, AlarmDefinition, AlarmError
from rules.compile import CompiledRule
from rules.tickets import Status, TicketBook, TicketError

log = structlog.get_logger(__name__)

SLA_SEVERITY = "major"


def literal(text: str) -> str:
    """`text` as a message template that renders as itself (a rule name with braces)."""
    return text.replace("{", "{{").replace("}", "}}")


def rule_definition(rule: CompiledRule) -> AlarmDefinition:
    """The alarm of a rule with `alarm:`; its id is the rule's (`device.rule`)."""
    spec = rule.rule.alarm
    assert spec is not None
    return AlarmDefinition(
        id=rule.id, device=rule.device, severity=spec.severity,
        message=spec.message if spec.message is not None else literal(rule.name),
        on_delay=rule.rule.on_delay, off_delay=rule.rule.off_delay,
        chatter_limit=spec.chatter.limit, chatter_window=spec.chatter.window,
    )


def debouncer_definition(rule: CompiledRule) -> AlarmDefinition:
    """The hidden alarm of a ticket-only rule: its delays, no chattering (the ticket book
    already folds repeats into one ticket)."""
    return AlarmDefinition(
        id=rule.id, device=rule.device, severity="warning", message=literal(rule.name),
        on_delay=rule.rule.on_delay, off_delay=rule.rule.off_delay, chatter_limit=None,
    )


@dataclass(slots=True)
class SlaWatch:
    """An SLA alarm: which ticket's clock ran out. It holds while the work the clock was
    about is still undone: the repair (any clock before resolution), or the follow-up."""

    device: str
    fault: str
    ticket: str
    clock: str

    @property
    def alarm_id(self) -> str:
        return f"{self.device}.sla_{self.fault}"

    def definition(self) -> AlarmDefinition:
        return AlarmDefinition(
            id=self.alarm_id, device=self.device, severity=SLA_SEVERITY,
            message=literal(f"工单 {self.ticket} {self.clock} 超时"), chatter_limit=None,
        )

    def holds(self, book: TicketBook) -> bool:
        try:
            ticket = book.get(self.ticket)
        except TicketError:  # closed before a restart: no longer loaded
            return False
        if self.clock == "follow_up":
            return ticket.status is Status.RESOLVED
        return ticket.active


class AlarmSet:
    """The alarms by id, with their names and the rules behind them."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.alarms: dict[str, Alarm] = {}  # visible: rule alarms and SLA alarms
        self.names: dict[str, str] = {}
        self.rules: dict[str, CompiledRule] = {}  # rule id → rule, alarms and debouncers
        self.debouncers: dict[str, Alarm] = {}  # hidden, by rule id
        self.sla: dict[str, SlaWatch] = {}  # SLA alarms by alarm id
        for rule in rules:
            if rule.when is None:
                continue
            self.rules[rule.id] = rule
            if rule.rule.alarm is not None:
                self.alarms[rule.id] = Alarm(rule_definition(rule))
                self.names[rule.id] = rule.name
            else:
                self.debouncers[rule.id] = Alarm(debouncer_definition(rule))

    def for_rule(self, rule_id: str) -> Alarm | None:
        """The alarm a rule drives: its visible alarm, else its debouncer."""
        return self.alarms.get(rule_id) or self.debouncers.get(rule_id)

    def of_device(self, device: str) -> Iterator[Alarm]:
        """The device's rule alarms and debouncers (what maintenance mode suppresses)."""
        for alarm_id, alarm in self.alarms.items():
            if alarm_id not in self.sla and alarm.definition.device == device:
                yield alarm
        for alarm in self.debouncers.values():
            if alarm.definition.device == device:
                yield alarm

    def every(self) -> Iterator[Alarm]:
        yield from self.alarms.values()
        yield from self.debouncers.values()

    def hidden(self, alarm: Alarm) -> bool:
        return self.debouncers.get(alarm.id) is alarm

    def devices(self) -> set[str]:
        return {a.definition.device for a in self.every()}

    # -- SLA alarms --------------------------------------------------------------------

    def sla_alarm(self, watch: SlaWatch) -> Alarm:
        """The SLA alarm for this ticket's device and fault, now watching `watch`."""
        self.sla[watch.alarm_id] = watch
        self.names[watch.alarm_id] = f"工单超时 {watch.fault}"
        alarm = self.alarms.get(watch.alarm_id)
        if alarm is None:
            alarm = self.alarms[watch.alarm_id] = Alarm(watch.definition())
        else:  # a later clock of the same fault: the message names it
            alarm.definition = watch.definition()
        return alarm

    def drop_sla(self, alarm_id: str) -> None:
        """An SLA alarm that has returned and been acknowledged: nothing left to show."""
        self.sla.pop(alarm_id, None)
        self.alarms.pop(alarm_id, None)
        self.names.pop(alarm_id, None)

    # -- restart -----------------------------------------------------------------------

    def restore(self, saved: Mapping[str, Mapping[str, Any]], debouncers: Mapping[str, Any],
                sla: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Saved states onto the alarms that still exist; the ids of saved alarms to forget."""
        for alarm_id, body in sla.items():
            if alarm_id in saved:
                self.sla_alarm(SlaWatch(**body))
        for alarms, states in ((self.alarms, saved), (self.debouncers, debouncers)):
            for alarm_id, alarm in list(alarms.items()):
                if alarm_id in states:
                    alarms[alarm_id] = _restore(alarm.definition, states[alarm_id]) or alarm
        return sorted(set(saved) - set(self.alarms))

    def sla_snapshot(self) -> dict[str, dict[str, Any]]:
        return {alarm_id: asdict(watch) for alarm_id, watch in self.sla.items()}


def _restore(definition: AlarmDefinition, snapshot: Mapping[str, Any]) -> Alarm | None:
    try:
        return Alarm.restore(definition, snapshot)
    except (AlarmError, KeyError, TypeError, ValueError) as exc:
        log.warning("alarm state not restored; starting normal", alarm=definition.id,
                    device=definition.device, error=str(exc))
        return None
