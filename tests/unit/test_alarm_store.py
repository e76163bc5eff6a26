"""Alarm state survives a restart: the SQLite store, and restored alarms that behave the same."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rules.alarms import Alarm, AlarmDefinition, AlarmError, AlarmState, AlarmStore, EventType

S = AlarmState
E = EventType


def definition(id_: str = "pump_b1_1.low_outlet_pressure", **overrides) -> AlarmDefinition:
    fields = dict(id=id_, device="pump_b1_1", severity="critical",
                  message="出水压力低 {outlet_pressure:.2f} MPa")
    fields.update(overrides)
    return AlarmDefinition(**fields)


def restart(path: Path, *alarms: Alarm) -> dict[str, Alarm]:
    """Save, close, reopen and restore: what the gateway does across a restart."""
    with AlarmStore(path) as store:
        store.save(alarms)
    with AlarmStore(path) as store:
        saved = store.load()
    return {a.id: Alarm.restore(a.definition, saved[a.id]) for a in alarms}


def test_an_empty_store_loads_nothing(tmp_path):
    with AlarmStore(tmp_path / "state" / "alarms.db") as store:
        assert store.load() == {}


def test_every_alarm_state_round_trips_unchanged(tmp_path):
    a = Alarm(definition())
    a.update(0, True, {"outlet_pressure": 0.1, "备注": "一号泵"})
    a.acknowledge(5, by="张工")
    restored = restart(tmp_path / "alarms.db", a)[a.id]
    assert restored.snapshot() == a.snapshot()
    assert restored.state_dict() == a.state_dict()


def test_an_acknowledged_alarm_stays_acknowledged_after_a_restart(tmp_path):
    a = Alarm(definition())
    a.update(0, True)
    a.acknowledge(5, by="op")
    restored = restart(tmp_path / "alarms.db", a)[a.id]
    assert restored.state == S.ACTIVE_ACKNOWLEDGED
    assert restored.update(100, True) == []
    assert [(e.type, e.state) for e in restored.update(110, False)] == [(E.CLEARED, S.NORMAL)]


def test_a_shelve_that_expired_during_the_downtime_expires_at_the_first_tick(tmp_path):
    a = Alarm(definition())
    a.update(0, True)
    a.shelve(10, until=600, by="op")
    restored = restart(tmp_path / "alarms.db", a)[a.id]
    assert restored.state == S.SHELVED  # nothing happens before the first tick
    events = restored.tick(3600)
    assert [(e.type, e.state, e.ts) for e in events] == [
        (E.UNSHELVED, S.ACTIVE_UNACKNOWLEDGED, 3600)]


def test_a_running_on_delay_carries_on_after_a_restart(tmp_path):
    a = Alarm(definition(on_delay=30))
    a.update(0, True)
    restored = restart(tmp_path / "alarms.db", a)[a.id]
    assert restored.tick(29) == []
    assert [e.type for e in restored.update(30, True)] == [E.RAISED]


def test_chattering_and_its_window_survive_a_restart(tmp_path):
    a = Alarm(definition(chatter_limit=2, chatter_window=60))
    for t in (0, 10, 20):
        a.update(t, True)
        a.update(t + 1, False)
    assert a.chattering
    restored = restart(tmp_path / "alarms.db", a)[a.id]
    assert restored.update(30, True) == []  # still chattering: no raise
    assert [e.details for e in restored.tick(90)] == [{"chattering": False, "count": 0}]


def test_modes_survive_a_restart(tmp_path):
    suppressed, out = Alarm(definition("a.suppressed")), Alarm(definition("a.out"))
    suppressed.suppress(0, True)
    out.out_of_service(0, True, by="op")
    restored = restart(tmp_path / "alarms.db", suppressed, out)
    assert restored["a.suppressed"].state == S.SUPPRESSED
    assert restored["a.out"].state == S.OUT_OF_SERVICE


def test_saving_again_replaces_an_alarms_state_and_keeps_the_others(tmp_path):
    path = tmp_path / "alarms.db"
    a, b = Alarm(definition("a")), Alarm(definition("b"))
    b.update(0, True)
    with AlarmStore(path) as store:
        store.save([a, b])
        a.update(5, True)
        store.save([a])
        saved = store.load()
    assert saved["a"]["base"] == "active_unacknowledged"
    assert saved["b"]["base"] == "active_unacknowledged"
    assert len(saved) == 2


class _Broken:
    """An alarm the database refuses (no id): the batch it is in must not be half written."""

    id = None

    def snapshot(self) -> dict:
        return {}


def test_a_batch_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "alarms.db"
    a = Alarm(definition("a"))
    with AlarmStore(path) as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.save([a, _Broken()])
        assert store.load() == {}
        store.save([a])
        assert list(store.load()) == ["a"]


def test_forgetting_drops_the_state_of_removed_alarms(tmp_path):
    with AlarmStore(tmp_path / "alarms.db") as store:
        store.save([Alarm(definition("a")), Alarm(definition("b"))])
        store.forget(["a"])
        assert list(store.load()) == ["b"]


def test_a_restored_alarm_takes_its_severity_from_the_current_definition(tmp_path):
    a = Alarm(definition())
    a.update(0, True)
    saved = a.snapshot()
    restored = Alarm.restore(definition(severity="warning"), saved)
    assert restored.state_dict()["severity"] == "warning"


def test_a_saved_state_of_an_unknown_version_is_refused():
    with pytest.raises(AlarmError, match="unknown saved state version"):
        Alarm.restore(definition(), {"version": 99})
