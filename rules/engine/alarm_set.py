"""Every alarm the engine runs: one per rule with `alarm:`, hidden debouncers for rules
that open tickets without an alarm, SLA alarms raised when a ticket runs late, and
external alarms another stage decides (a missed patrol checkpoint, an intact rate below
its target) but that live the same life cycle (ack, shelve, retained upstream).

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
# rules_state.db kind of the external alarms' definitions (their states are in alarms.db)
EXTERNAL_ALARM = "external_alarm"


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


@dataclass(slots=True)
class ExternalAlarm:
    """An alarm raised and cleared by another stage through `RuleEngine.raise_external`.

    `owner` names that stage ("patrol", "kpi"): it lists its alarms with
    `external_alarms(owner)` and forgets those its configuration no longer has.
    `context` is the owner's own JSON-ready data about the alarm (the round a checkpoint
    was missed in), kept with it across restarts.
    """

    alarm_id: str
    device: str
    severity: str
    message: str
    owner: str
    name: str
    context: dict[str, Any]

    def definition(self) -> AlarmDefinition:
        return AlarmDefinition(id=self.alarm_id, device=self.device, severity=self.severity,
                               message=literal(self.message), chatter_limit=None)


class AlarmSet:
    """The alarms by id, with their names and the rules behind them."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.alarms: dict[str, Alarm] = {}  # visible: rule, SLA and external alarms
        self.names: dict[str, str] = {}
        self.rules: dict[str, CompiledRule] = {}  # rule id → rule, alarms and debouncers
        self.debouncers: dict[str, Alarm] = {}  # hidden, by rule id
        self.sla: dict[str, SlaWatch] = {}  # SLA alarms by alarm id
        self.external: dict[str, ExternalAlarm] = {}  # external alarms by alarm id
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
            if (alarm_id not in self.sla and alarm_id not in self.external
                    and alarm.definition.device == device):
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
        # a later clock of the same fault: the message names it
        return self._shown(watch.definition(), f"工单超时 {watch.fault}")

    def drop_sla(self, alarm_id: str) -> None:
        """An SLA alarm that has returned and been acknowledged: nothing left to show."""
        self.sla.pop(alarm_id, None)
        self._hide(alarm_id)

    def _shown(self, definition: AlarmDefinition, name: str) -> Alarm:
        """The visible alarm of `definition`, created or given it (an SLA or external
        alarm's definition follows its latest raise), keeping its state."""
        self.names[definition.id] = name
        alarm = self.alarms.get(definition.id)
        if alarm is None:
            alarm = self.alarms[definition.id] = Alarm(definition)
        else:
            alarm.definition = definition
        return alarm

    def _hide(self, alarm_id: str) -> None:
        self.alarms.pop(alarm_id, None)
        self.names.pop(alarm_id, None)

    # -- external alarms ---------------------------------------------------------------

    def external_alarm(self, spec: ExternalAlarm) -> Alarm:
        """The external alarm `spec` describes, created or brought up to date (its message
        and severity may change from one raise to the next).

        ValueError when the id is a rule's or an SLA alarm's, or another owner's.
        """
        known = self.external.get(spec.alarm_id)
        if known is None and (spec.alarm_id in self.alarms or spec.alarm_id in self.debouncers):
            raise ValueError(f"alarm id {spec.alarm_id} is already a rule's or an SLA alarm's")
        if known is not None and known.owner != spec.owner:
            raise ValueError(f"alarm {spec.alarm_id} belongs to {known.owner}, not {spec.owner}")
        self.external[spec.alarm_id] = spec
        return self._shown(spec.definition(), spec.name)

    def drop_external(self, alarm_id: str) -> None:
        self.external.pop(alarm_id, None)
        self._hide(alarm_id)

    def external_snapshot(self) -> dict[str, dict[str, Any]]:
        return {alarm_id: asdict(spec) for alarm_id, spec in self.external.items()}

    # -- restart -----------------------------------------------------------------------

    def restore(self, saved: Mapping[str, Mapping[str, Any]], debouncers: Mapping[str, Any],
                sla: Mapping[str, Mapping[str, Any]],
                external: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Saved states onto the alarms that still exist; the ids of saved alarms to forget.

        External alarms exist as long as their owner keeps them: their definitions come
        back from `external` (those with a saved state)."""
        for alarm_id, body in sla.items():
            if alarm_id in saved:
                self.sla_alarm(SlaWatch(**body))
        for alarm_id, body in external.items():
            if alarm_id in saved and alarm_id not in self.alarms:
                try:
                    self.external_alarm(ExternalAlarm(**body))
                except (TypeError, ValueError) as exc:
                    log.warning("external alarm not restored", alarm=alarm_id, error=str(exc))
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
