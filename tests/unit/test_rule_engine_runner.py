"""The engine's timers on APScheduler: ticks and the maintenance-plan date job reach
`emit`, and a failing job does not stop them. Waits are generous; nothing asserts how
long anything took."""

from __future__ import annotations

import asyncio
import time

from test_engine_site import open_engine, poll, site

from rules.engine.runner import RuleRunner

WAIT = 10.0


class Collected:
    def __init__(self) -> None:
        self.items: list = []

    def __call__(self, item) -> None:
        self.items.append(item)

    async def wait_for(self, predicate) -> list:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = [i for i in self.items if predicate(i)]
            if found:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"nothing matched within {WAIT} s; got {self.items!r}")


def is_alarm(transition: str):
    return lambda e: getattr(e, "type", "") == "alarm_event" and e.body["transition"] == transition


async def test_a_delay_running_out_reaches_emit_through_the_tick_job(tmp_path):
    rule = {"id": "tripped", "when": "fault == 1", "for": "0.2s", "alarm": {"severity": "major"}}
    engine, _ = open_engine(site([rule]), tmp_path, time.time)
    emit = Collected()
    runner = RuleRunner(engine, emit, tick=0.05)
    await runner.start()
    try:
        engine.process(poll("pump_1", time.time(), fault=1))
        [raised] = await emit.wait_for(is_alarm("raised"))
        assert raised.body["alarm"] == "pump_1.tripped"
    finally:
        await runner.stop()
        engine.close()


async def test_a_failing_tick_is_logged_and_the_next_one_runs(tmp_path):
    rule = {"id": "tripped", "when": "fault == 1", "for": "0.1s", "alarm": {"severity": "major"}}
    engine, _ = open_engine(site([rule]), tmp_path, time.time)
    real_tick, calls = engine.tick, []

    def flaky_tick(now=None):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real_tick(now)

    engine.tick = flaky_tick
    emit = Collected()
    runner = RuleRunner(engine, emit, tick=0.05)
    await runner.start()
    try:
        engine.process(poll("pump_1", time.time(), fault=1))
        await emit.wait_for(is_alarm("raised"))
        assert len(calls) >= 2
    finally:
        await runner.stop()
        engine.close()


async def test_the_date_job_raises_a_calendar_plan_when_it_comes_due(tmp_path):
    plan = {"task": "patrol", "title": "泵房巡检", "every_days": 0.3 / 86400, "asset": "pump_room"}
    engine, _ = open_engine(site(maintenance=[plan]), tmp_path, time.time)
    assert engine.next_plan_due() is not None
    emit = Collected()
    runner = RuleRunner(engine, emit, tick=3600)  # no tick in this test: the date job alone
    await runner.start()
    try:
        first = await emit.wait_for(lambda e: getattr(e, "type", "") == "ticket_event")
        assert first[0].body["event"] == "opened" and first[0].device == "pump_room"
        # it set itself again: the patrol due next is absorbed by the open ticket, then the
        # job comes back once more (a second firing shows the job was made again)
        before = engine.next_plan_due()
        deadline = time.monotonic() + WAIT
        while engine.next_plan_due() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert engine.next_plan_due() > before
    finally:
        await runner.stop()
        engine.close()
