"""What the rule engine remembers across a reload: the new engine gets the old one's point
history, last evaluation times, counts and flood window for the devices that did not
restart; alarms and tickets come back from disk by themselves."""

from __future__ import annotations

from pathlib import Path

from test_engine_site import MIN, T0, Clock, kinds, open_engine, poll, site

from gateway.reload import carry_rule_state
from rules.engine.engine import RuleEngine

# a jump of the pressure within ten minutes: judged against the value before the reload
JUMP = {"id": "pressure_jump", "when": 'delta(outlet_pressure, "10m") > 0.5',
        "alarm": {"severity": "minor"}}
LOW = {"id": "pressure_low", "when": "outlet_pressure < 0.2",
       "alarm": {"severity": "major"}, "ticket": {"category": "water"}}


def _reloaded(config, tmp_path: Path, clock: Clock, old: RuleEngine,
              restarted: list[str]) -> tuple[RuleEngine, int]:
    """The daemon's order: the old engine has seen its last batch and is closed, the new
    one gets the carried state, then opens."""
    old.close()
    new = RuleEngine(config, tmp_path, clock=clock)
    carried = carry_rule_state(old, new, restarted)
    new.open()
    return new, carried


def test_a_device_that_did_not_restart_keeps_its_window_history(tmp_path: Path) -> None:
    clock = Clock()
    config = site([JUMP], devices=("pump_1", "pump_2"))
    old, _ = open_engine(config, tmp_path, clock)
    for device in ("pump_1", "pump_2"):
        assert kinds(old.process(poll(device, T0, outlet_pressure=0.1))) == []

    new, carried = _reloaded(config, tmp_path, clock, old, restarted=["pump_2"])
    assert carried == 1  # pump_1's pressure; pump_2 restarted and starts afresh

    clock.now = T0 + MIN
    assert kinds(new.process(poll("pump_1", clock.now, outlet_pressure=0.8))) == ["raised"]
    # the same jump on pump_2 is not seen: its history began after the reload
    assert kinds(new.process(poll("pump_2", clock.now, outlet_pressure=0.8))) == []
    assert [s.value for s in new.history.get("pump_1.outlet_pressure").samples] == [0.1, 0.8]
    new.close()


def test_alarm_and_ticket_state_and_counts_survive_the_new_engine(tmp_path: Path) -> None:
    clock = Clock()
    config = site([LOW, JUMP])
    old, _ = open_engine(config, tmp_path, clock)
    old.process(poll("pump_1", T0, outlet_pressure=0.1))
    clock.now = T0 + 30
    old.acknowledge("pump_1.pressure_low", "张工")
    ticket = old.tickets()[0]
    evaluations = old.evaluator.evaluations

    clock.now = T0 + MIN
    old.close()
    new = RuleEngine(site([{**LOW, "name": "出水压力低"}, JUMP]), tmp_path, clock=clock)
    carry_rule_state(old, new, [])
    assert new.evaluator.evaluations == evaluations  # counts since the process started
    assert new.evaluator.previous["pump_1.pressure_low"] == T0  # for `changed`: the last run
    new.open()
    assert new.alarm("pump_1.pressure_low")["state"] == "active_acknowledged"
    (same,) = new.tickets()
    assert (same["ticket"], same["state"], same["opened"]) == (
        ticket["ticket"], ticket["state"], ticket["opened"])
    assert same["sla"] == ticket["sla"]  # the clocks run from when the ticket was opened
    new.close()


def test_a_changed_derived_rule_starts_a_new_history(tmp_path: Path) -> None:
    clock = Clock()
    double = {"id": "doubled", "derive": "outlet_pressure * 2"}
    reads = {"id": "doubled_jump", "when": 'delta(doubled, "10m") > 1',
             "alarm": {"severity": "minor"}}
    old, _ = open_engine(site([double, reads]), tmp_path, clock)
    old.process(poll("pump_1", T0, outlet_pressure=0.1))
    assert old.history.get("pump_1.doubled") is not None

    changed = site([{**double, "derive": "outlet_pressure * 3"}, reads])
    new, _ = _reloaded(changed, tmp_path, clock, old, [])
    assert new.history.get("pump_1.doubled") is None  # its old values meant something else
    assert new.history.get("pump_1.outlet_pressure") is not None
    new.close()


def test_a_flood_in_progress_is_still_a_flood_after_the_reload(tmp_path: Path) -> None:
    clock = Clock()
    config = site([LOW], devices=tuple(f"pump_{i}" for i in range(4)),
                  engine={"flood_threshold": 2})
    old, _ = open_engine(config, tmp_path, clock)
    floods = []
    for i in range(4):
        out = old.process(poll(f"pump_{i}", T0 + i, outlet_pressure=0.1))
        floods += [e.body for e in out if getattr(e, "type", None) == "alarm_flood"]
    assert [f["flood"] for f in floods] == [True]

    clock.now = T0 + 5
    new, _ = _reloaded(config, tmp_path, clock, old, [])
    assert new.flood.in_flood is True and new.flood.count(clock.now) == 4
