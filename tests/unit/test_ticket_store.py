"""Tickets and schedules survive a restart, and their SLA clocks keep running while down."""

from __future__ import annotations

from datetime import UTC, datetime

from rules.tickets import Schedule, ScheduleEntry, Status, TicketBook, TicketRequest, TicketStore

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0


def plan() -> Schedule:
    return Schedule([
        ScheduleEntry("half_monthly", "lift_1", "elevator", every_days=15, start=T0),
        ScheduleEntry("bearing_grease", "pump_b1_1", counter="run_hours", every=500),
    ])


def restart(path) -> tuple[TicketStore, TicketBook, Schedule]:
    store = TicketStore(path)
    book, schedule = TicketBook(), plan()
    store.load_into(book, schedule)
    return store, book, schedule


def test_tickets_come_back_after_a_restart_with_history_and_counts(tmp_path):
    store = TicketStore(tmp_path / "tickets.db")
    book = TicketBook()
    ticket, _ = book.open(TicketRequest(device="pump_b1_1", fault="trip", category="water", title="水泵跳闸"), T0)
    book.open(TicketRequest(device="pump_b1_1", fault="trip", category="water"), T0 + 60)
    book.dispatch(ticket.id, T0 + 120, "dispatcher-wang", owner="li", backup="zhao")
    store.commit(book)
    store.close()

    store, again, _ = restart(tmp_path / "tickets.db")
    back = again.get(ticket.id)
    assert back.to_dict() == ticket.to_dict()
    assert back.title == "水泵跳闸" and back.count == 2 and back.status is Status.DISPATCHED
    # still the active ticket for its device and fault
    same, events = again.open(TicketRequest(device="pump_b1_1", fault="trip", category="water"), T0 + 180)
    assert same.id == ticket.id and events[0].type == "recurred"


def test_a_deadline_that_passed_while_down_is_breached_at_the_first_tick(tmp_path):
    store = TicketStore(tmp_path / "tickets.db")
    book = TicketBook()
    ticket, _ = book.open(TicketRequest(device="pump_b1_1", fault="trip", category="water", backup="zhao"), T0)
    book.tick(T0 + 5 * MIN)
    store.commit(book)
    store.close()  # down from T0+5min to T0+20min: the 15-minute arrival deadline passes

    store, again, _ = restart(tmp_path / "tickets.db")
    events = again.tick(T0 + 20 * MIN)
    assert [(e.type, e.body["clock"], e.body.get("to")) for e in events] == [
        ("sla_breached", "arrival", None),
        ("escalated", "arrival", "zhao"),
    ]
    store.commit(again)
    store.close()

    store, third, _ = restart(tmp_path / "tickets.db")
    assert third.tick(T0 + 21 * MIN) == []  # already said before the second restart
    assert third.get(ticket.id).clocks["arrival"].state == "breached"


def test_new_ids_after_a_restart_do_not_reuse_old_ones(tmp_path):
    store = TicketStore(tmp_path / "tickets.db")
    book = TicketBook()
    first, _ = book.open(TicketRequest(device="a", fault="f"), T0)
    book.cancel(first.id, T0 + 1, "li")
    store.commit(book)
    store.close()

    store, again, _ = restart(tmp_path / "tickets.db")
    assert again.tickets() == []  # cancelled tickets stay in the ledger, not in memory
    assert store.ticket(first.id).status is Status.CANCELLED
    second, _ = again.open(TicketRequest(device="a", fault="f"), T0 + 2)
    assert second.id == "T-20261123-0002"


def test_schedule_state_survives_a_restart_and_a_due_while_down_is_raised_at_start(tmp_path):
    store = TicketStore(tmp_path / "tickets.db")
    book, schedule = TicketBook(), plan()
    for request in schedule.due(T0, {"pump_b1_1": {"run_hours": 420}}, book.active_keys()):
        book.open(request, T0)
    store.commit(book, schedule)
    store.close()

    store, again, schedule2 = restart(tmp_path / "tickets.db")
    assert schedule2.state == schedule.state
    # the elevator ticket from T0 is still active, so its next due (T0+15d) is absorbed;
    # the pump crossed 500 run hours while the gateway was down
    due = schedule2.due(T0 + 16 * DAY, {"pump_b1_1": {"run_hours": 530}}, again.active_keys())
    assert [(r.device, r.fault) for r in due] == [("pump_b1_1", "bearing_grease")]


def test_a_failed_batch_leaves_the_store_as_it_was(tmp_path):
    store = TicketStore(tmp_path / "tickets.db")
    book = TicketBook()
    ticket, _ = book.open(TicketRequest(device="a", fault="f"), T0)
    store.commit(book)
    book.arrive(ticket.id, T0 + 60, "li")

    class Boom(Exception):
        pass

    def exploding():
        yield from book.changed()
        raise Boom

    try:
        store.save(exploding())
    except Boom:
        pass
    assert store.ticket(ticket.id).status is Status.OPEN
