"""The ticket a rule asks for, in the ticket book's words.

One ticket per device and fault: the fault is the rule's id unless the rule names one,
so two rules about the same fault (a low-pressure alarm and a pump trip, say) can share
a ticket by writing the same `fault:`.
"""

from __future__ import annotations

from rules.compile import CompiledRule
from rules.tickets import Grade, Kind, Priority, TicketRequest


def ticket_request(rule: CompiledRule, device_name: str, *, with_alarm: bool) -> TicketRequest:
    """The request of a rule with `ticket:`; `with_alarm` when the rule has a visible alarm
    (the ticket then names it as its source)."""
    spec = rule.rule.ticket
    assert spec is not None
    source = {"rule": rule.rule.id}
    if with_alarm:
        source["alarm"] = rule.id
    return TicketRequest(
        device=rule.device,
        fault=spec.fault or rule.rule.id,
        category=spec.category,
        kind=Kind(spec.kind),
        title=spec.title or f"{device_name} {rule.name}",
        priority=Priority(spec.priority) if spec.priority is not None else None,
        grade=Grade(spec.grade),
        trapped=spec.trapped,
        complete_within=spec.complete_within,
        source=source,
    )
