"""Service KPIs from tickets with known timestamps, as the rule engine's ticket book and
store keep them (tickets.db): arrival within SLA by priority, follow-up within 48 h,
response times (mean and p90), escalations, planned maintenance on time.

The tickets, opened on 5 October 2026 (T0 = 09:00 on site), urgent = 15 min to arrive,
normal = 30 min, follow-up within 48 h of resolution:

    A urgent  T0        arrive +10 min (met)   resolve +40 min  follow up +24 h (met)
    B urgent  T0+1h     arrive +20 min (late: breached and escalated at +15 min)
    C normal  T0+2h     dispatch +5, arrive +25 (met)  resolve +120  follow up +50 h (late)
    D normal  23:45     not yet arrived, its 30 min not over when judged (pending)
    E normal  T0+4h     never arrived (late)
    F urgent  6 Oct     another day: not in the 5th's figures
    P1 planned T0, 1 day to do, resolved after 20 h (on time)
    P2 planned T0, 1 day to do, resolved after 30 h (late)
    P3 planned T0, 12 h to do, not done (overdue)
    P4 planned T0+12h, 7 days to do, not done (open)

Judged at midnight, when the day is over (a step done later, such as a follow-up the next
day, is in the ticket already and judged by its own time): arrival urgent 1 met, 1 late → 50 %; normal 1 met, 1 late,
1 pending → 50 %; all 2/4. Follow-up: A met, C late → 50 % (its clock ran out before
it was judged only because the book's own times say so). To accept: A 10 (arrival),
B 20, C 5 → mean 11.67, p90 = 3rd of 3 = 20. To arrive: 10, 20, 25 → mean 18.33, p90
25. To resolve: 40, 120 → mean 80, p90 120. Planned: 1 on time, 1 late, 1 overdue, 1
open → on-time rate 1/3.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.equipment.service import percentile, read_tickets, service_kpis
from rules.tickets import Kind, Priority, TicketBook, TicketRequest, TicketStore

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY0 = datetime(2026, 10, 5, tzinfo=SHANGHAI).timestamp()
T0 = datetime(2026, 10, 5, 9, 0, tzinfo=SHANGHAI).timestamp()
M, H = 60.0, 3600.0
JUDGED = DAY0 + 24 * H


def repair(book: TicketBook, device: str, at: float, priority: Priority) -> str:
    ticket, _ = book.open(TicketRequest(device, f"fault_{at:.0f}", category="general",
                                        priority=priority), at)
    return ticket.id


def planned(book: TicketBook, device: str, at: float, within: float) -> str:
    ticket, _ = book.open(TicketRequest(device, f"plan_{at:.0f}_{within:.0f}", kind=Kind.PREVENTIVE,
                                        complete_within=within), at)
    return ticket.id


def the_month_so_far(data_dir: Path) -> None:
    """The tickets above through the book, ticked as the engine would, saved to tickets.db."""
    book = TicketBook()
    store = TicketStore(data_dir / "tickets.db")
    a = repair(book, "pump_b1_1", T0, Priority.URGENT)
    book.arrive(a, T0 + 10 * M, "李工")
    book.resolve(a, T0 + 40 * M, "李工")
    b = repair(book, "lift_b1_1", T0 + H, Priority.URGENT)
    book.tick(T0 + H + 15 * M)  # the arrival clock runs out: breached, escalated to the backup
    book.arrive(b, T0 + H + 20 * M, "王工")
    c = repair(book, "sump_b1_1", T0 + 2 * H, Priority.NORMAL)
    book.dispatch(c, T0 + 2 * H + 5 * M, "调度", owner="赵工")
    book.arrive(c, T0 + 2 * H + 25 * M, "赵工")
    book.resolve(c, T0 + 4 * H, "赵工")
    repair(book, "door_b1_io", DAY0 + 23.75 * H, Priority.NORMAL)  # D
    repair(book, "fire_panel_main", T0 + 4 * H, Priority.NORMAL)  # E
    book.follow_up(a, T0 + 40 * M + 24 * H, "客服")
    book.follow_up(c, T0 + 4 * H + 50 * H, "客服")
    repair(book, "lift_b1_1", DAY0 + 24 * H + H, Priority.URGENT)  # F, on the 6th
    p1 = planned(book, "lift_b1_1", T0, 24 * H)
    book.arrive(p1, T0 + 19 * H, "维保")
    book.resolve(p1, T0 + 20 * H, "维保")
    p2 = planned(book, "water_tank_b1", T0, 24 * H)
    book.arrive(p2, T0 + 29 * H, "保洁")
    book.resolve(p2, T0 + 30 * H, "保洁")
    planned(book, "septic_tank_1", T0, 12 * H)  # P3
    planned(book, "pump_b1_1", T0 + 12 * H, 7 * 24 * H)  # P4
    store.commit(book)
    store.close()


@pytest.fixture
def kpis(tmp_path: Path):
    the_month_so_far(tmp_path)
    tickets = read_tickets(tmp_path)
    assert len(tickets) == 10  # every ticket ever saved, closed ones included
    return service_kpis(tickets, DAY0, DAY0 + 24 * H, JUDGED)


def test_arrival_within_sla_by_priority(kpis) -> None:
    urgent, normal = kpis.arrival["urgent"], kpis.arrival["normal"]
    assert (urgent.met, urgent.late, urgent.pending, urgent.rate) == (1, 1, 0, 0.5)
    assert (normal.met, normal.late, normal.pending, normal.rate) == (1, 1, 1, 0.5)
    assert kpis.arrival_all.rate == 0.5
    assert len(kpis.corrective) == 5  # F belongs to the 6th


def test_follow_up_within_48_hours(kpis) -> None:
    f = kpis.follow_up
    assert (f.met, f.late, f.rate) == (1, 1, 0.5)


def test_mean_and_p90_response_times(kpis) -> None:
    assert kpis.accept.values == [10 * M, 20 * M, 5 * M]
    assert kpis.accept.mean == pytest.approx(35 / 3 * M) and kpis.accept.p90 == 20 * M
    assert kpis.arrive.mean == pytest.approx(55 / 3 * M) and kpis.arrive.p90 == 25 * M
    assert (kpis.resolve.mean, kpis.resolve.p90) == (80 * M, 120 * M)
    summary = kpis.summary()
    assert summary["accept"] == {"n": 3, "mean_min": 11.67, "p90_min": 20.0}
    assert summary["resolve"] == {"n": 2, "mean_min": 80.0, "p90_min": 120.0}


def test_escalations_and_breaches(kpis) -> None:
    assert (kpis.escalated_tickets, kpis.escalations) == (1, 1)  # B, once: to its backup
    assert kpis.breached_tickets == 3  # B late, C's follow-up late, E never arrived


def test_planned_maintenance_on_time_late_overdue_and_open(kpis) -> None:
    p = kpis.planned
    assert (p.on_time, p.late, p.overdue, p.open, p.cancelled) == (1, 1, 1, 1, 0)
    assert p.rate == pytest.approx(1 / 3)


def test_p90_is_the_nearest_rank() -> None:
    assert percentile([], 0.9) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile(list(map(float, range(1, 11))), 0.9) == 9.0  # ⌈9⌉-th of 10
    assert percentile(list(map(float, range(1, 12))), 0.9) == 10.0  # ⌈9.9⌉-th of 11


def test_no_tickets_file_is_no_tickets(tmp_path: Path) -> None:
    assert read_tickets(tmp_path) == []
    empty = service_kpis([], DAY0, DAY0 + 24 * H, JUDGED)
    assert empty.arrival_all.rate is None and empty.planned.rate is None
