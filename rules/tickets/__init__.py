"""Maintenance tickets: corrective and preventive, with SLA clocks that warn and escalate.

Pure logic driven by the rule engine: time is always passed in as `now` (seconds since
the epoch), every call returns the events it caused, and `TicketStore` keeps the book
and the schedule across restarts.
"""

from rules.tickets.book import TicketBook
from rules.tickets.model import (
    Grade,
    Kind,
    Priority,
    Status,
    Ticket,
    TicketError,
    TicketEvent,
    TicketRequest,
)
from rules.tickets.schedule import Schedule, ScheduleEntry
from rules.tickets.sla import Clock, SlaPolicy
from rules.tickets.store import TicketStore

__all__ = [
    "Clock",
    "Grade",
    "Kind",
    "Priority",
    "Schedule",
    "ScheduleEntry",
    "SlaPolicy",
    "Status",
    "Ticket",
    "TicketBook",
    "TicketError",
    "TicketEvent",
    "TicketRequest",
    "TicketStore",
]
