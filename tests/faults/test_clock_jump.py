"""The wall clock jumps an hour forwards, and back (an RTC-less Pi booting with a stale time,
then NTP correcting it; an operator fixing the time zone by hand). The whole process sees
the jump (time-machine moves time.time and datetime.now; monotonic time runs on), the
gateway's `clock=` included: readings are stamped with the new time and the rule engine,
its timers and the energy stage live by it.

What must hold: every SLA clock breaches and escalates once, the fault that is still there
is the same alarm and the same ticket (no storm of duplicates), no period is rolled up
twice and no consumption is negative, and the timers keep running after a jump back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from faultlib.modbus_device import FaultyModbusDevice
from faultsite import Tap, device, modbus_tcp, running_gateway, until
from faultsite import write_site as write_fault_site

from gateway.commands.local import request, socket_path

HOUR = 3600.0
ARRIVAL = 3.0  # seconds: the urgent arrival SLA, so clocks run out within a test
TICK = 0.25  # the rule engine's timer
# 10:59:30 in the site's zone: the forward jump crosses the 11:00 and 12:00 hour boundaries
START = datetime(2025, 6, 2, 10, 59, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
PROFILE = {
    "id": "clock_pump",
    "name": "时钟测试水泵 clock-test pump",
    "system": "water_supply",
    "points": {
        "pressure": {"address": 0, "type": "uint16", "scale": 0.001, "unit": "MPa"},
        "fault_code": {"address": 1, "type": "uint16"},
        "energy": {"address": 2, "type": "uint32", "unit": "kWh", "counter": {"max_rate": 100000}},
    },
    "rules": [{
        "id": "pump_trip", "name": "水泵故障 pump trip", "when": "fault_code != 0",
        "alarm": {"severity": "major", "message": "水泵故障 Err{fault_code}"},
        "ticket": {"category": "water", "title": "水泵故障"},
    }],
}


@pytest.fixture
def pumps(tmp_path) -> Iterator[tuple]:
    made = {name: FaultyModbusDevice(holding=[452, 0, 0, 1000]).start() for name in ("pump_1", "pump_2")}
    site = write_fault_site(
        tmp_path / "site", site_id=f"clock-{uuid.uuid4().hex[:8]}",
        profiles={"clock_pump": PROFILE},
        devices=[device(name, modbus_tcp(dev.port), poll="100ms", profile="clock_pump")
                 for name, dev in made.items()],
        rules={"tick": f"{TICK}s"},
    )
    # the site's SLA: urgent arrival in ARRIVAL seconds, escalating every ARRIVAL seconds
    text = site.read_text(encoding="utf-8")
    site.write_text(text + f"sla:\n  arrival_urgent: {ARRIVAL}s\n", encoding="utf-8")
    yield site, made
    for dev in made.values():
        dev.stop()


def ticket_events(tap: Tap, kind: str, ticket: str | None = None) -> list:
    return [e for e in list(tap.events) if e.type == "ticket_event" and e.body["event"] == kind
            and (ticket is None or e.body["ticket"] == ticket)]


def alarm_events(tap: Tap, transition: str, alarm: str | None = None) -> list:
    return [e for e in list(tap.events) if e.type == "alarm_event"
            and e.body["transition"] == transition and (alarm is None or e.body["alarm"] == alarm)]


def rollups(tap: Tap) -> list[tuple[str, float, str, float]]:
    """(device, period start, point, value) of every energy rollup produced."""
    return [(b.device, b.ts, p, v) for b in list(tap.batches) for p, v in zip(b.points, b.values, strict=True)
            if p.startswith("energy_") and not p.endswith("_estimated")]


def count_energy(dev: FaultyModbusDevice, stop: asyncio.Event) -> asyncio.Task:
    """The meter counts a kWh every 0.2 s (uint32 in registers 2-3)."""
    async def run() -> None:
        while not stop.is_set():
            value = (dev.holding[2] << 16 | dev.holding[3]) + 1
            dev.holding[2:4] = [value >> 16, value & 0xFFFF]
            await asyncio.sleep(0.2)
    return asyncio.create_task(run())


async def test_a_jump_forward_and_back_breaches_each_clock_once_and_duplicates_nothing(pumps):
    site, devs = pumps
    stop = asyncio.Event()
    with time_machine.travel(START, tick=True) as traveller:
        async with running_gateway(site) as (gateway, tap):
            counting = count_energy(devs["pump_1"], stop)
            await until(lambda: len(tap.good("pump_1")) >= 10, "a second of counting")
            devs["pump_1"].holding[1] = 11  # Err11: the drive trips
            (opened,) = await until(lambda: ticket_events(tap, "opened"), "the ticket")
            ticket = opened.body["ticket"]

            traveller.shift(HOUR)  # an hour ahead, at once
            await until(lambda: len(ticket_events(tap, "escalated", ticket)) >= 2,
                        "the breach and both escalations")
            await until(lambda: any(b.ts >= START + HOUR for b in tap.of("pump_1")),
                        "a reading stamped after the jump")
            await asyncio.sleep(5 * TICK)  # ticks after the jump: nothing more may come
            ahead = _summary(tap, ticket)

            traveller.shift(-HOUR)  # corrected: back by the hour
            await asyncio.sleep(10 * TICK)
            await until(lambda: len(tap.of("pump_1")) > ahead["polls"] + 10, "polls after")
            back = _summary(tap, ticket)
            stop.set()
            await counting
            state = gateway.rules.alarm("pump_1.pump_trip")
            tickets = gateway.rules.tickets()
            energy_stats = gateway.energy.stats()

    # ahead: the arrival clock breached once, escalated once per level, one SLA alarm
    assert ahead["breached"] == 1 and ahead["escalated"] == 2 and ahead["warned"] == 0, ahead
    assert ahead["raised"] == {"pump_1.pump_trip": 1, "pump_1.sla_pump_trip": 1}, ahead
    assert ahead["opened"] == 1 and ahead["recurred"] == 0, ahead
    # back: nothing new at all, the fault is the same alarm and the same ticket
    assert {k: v for k, v in back.items() if k != "polls"} == {
        k: v for k, v in ahead.items() if k != "polls"}, (ahead, back)
    assert state["state"] == "active_unacknowledged"
    (only,) = [t for t in tickets if t["device"] == "pump_1"]
    assert only["ticket"] == ticket and only["count"] == 1
    # energy: each period rolled up once, never negative
    made = rollups(tap)
    periods = Counter((d, start, p) for d, start, p, _ in made)
    assert [k for k, n in periods.items() if n > 1] == [], made
    assert [r for r in made if r[3] is not None and r[3] < 0] == [], made
    hours = sorted(start for d, start, p, _ in made if p == "energy_hour")
    assert hours and all(START - HOUR < h <= START + HOUR for h in hours), hours
    # what pump_1 counted before the jump is in its 10:00 hour (and no more than that)
    (counted,) = [v for d, _, p, v in made if (d, p) == ("pump_1", "energy_hour")]
    before = [b.values[2] for b in tap.good("pump_1")
              if b.points[0] == "pressure" and b.ts < START + HOUR / 2]
    assert 0 < counted <= before[-1] - before[0] + 1, (counted, before)
    # a jump of the clock is not a meter fault: nothing flagged as a reset or a jump
    assert energy_stats.get("jump", 0) == 0 and energy_stats.get("reset", 0) == 0, energy_stats
    print(f"\nan hour forward then back: ahead {ahead}, back {back}; alarm {state['state']}, "
          f"ticket {ticket} count {only['count']}; rollups {made}; energy {energy_stats}")


async def test_a_fault_after_the_clock_jumps_back_is_alarmed_at_once(pumps):
    site, devs = pumps
    with time_machine.travel(START, tick=True) as traveller:
        async with running_gateway(site) as (gateway, tap):
            await until(lambda: len(tap.good("pump_2")) >= 3, "the first polls")
            traveller.shift(-HOUR)  # back by an hour, before anything happened
            await until(lambda: any(b.ts < START for b in tap.good("pump_2")),
                        "a reading stamped after the jump back")
            devs["pump_2"].holding[1] = 9  # Err09: undervoltage
            await until(lambda: alarm_events(tap, "raised", "pump_2.pump_trip"),
                        "the pump trip alarm after the jump back", timeout=5)
            (opened,) = await until(lambda: ticket_events(tap, "opened"), "its ticket", timeout=2)
    assert opened.body["device"] == "pump_2"


async def test_the_rule_timers_keep_running_after_the_clock_jumps_back(pumps):
    site, devs = pumps
    with time_machine.travel(START, tick=True) as traveller:
        async with running_gateway(site) as (gateway, tap):
            await until(lambda: tap.good("pump_2"), "the first polls")
            traveller.shift(-HOUR)  # back by an hour
            await asyncio.sleep(2 * TICK)
            reply = await asyncio.to_thread(
                request, socket_path(gateway.data_dir),
                {"id": "m-1", "type": "maintenance", "device": "pump_2", "on": True,
                 "for": "1s", "reason": "更换压力传感器", "by": "李工"})
            assert reply.get("ok"), reply
            began = time.monotonic()
            # maintenance mode ends on the engine's tick, a second after it began
            try:
                await until(lambda: [e for e in list(tap.events) if e.type == "maintenance"
                                     and e.body.get("maintenance") is False],
                            "maintenance mode to run out after the jump back",
                            timeout=1 + 10 * TICK + 2)
            finally:
                waited = time.monotonic() - began
    print(f"\nclock back an hour: a 1 s maintenance mode ran out after {waited:.1f} s")


async def test_an_acknowledgement_after_the_clock_went_back_is_not_before_the_raise(pumps):
    site, devs = pumps
    with time_machine.travel(START, tick=True) as traveller:
        async with running_gateway(site) as (gateway, tap):
            await until(lambda: tap.good("pump_1"), "the first polls")
            traveller.shift(HOUR)  # the clock runs an hour ahead...
            await until(lambda: any(b.ts > START + HOUR for b in tap.good("pump_1")), "polls")
            devs["pump_1"].holding[1] = 11
            (opened,) = await until(lambda: ticket_events(tap, "opened"), "the ticket")
            traveller.shift(-HOUR)  # ...and is corrected while the fault is being handled
            for body in ({"type": "ack_alarm", "alarm": "pump_1.pump_trip"},
                         {"type": "update_ticket", "ticket": opened.body["ticket"],
                          "step": "arrive"}):
                reply = await asyncio.to_thread(request, socket_path(gateway.data_dir),
                                                {"id": uuid.uuid4().hex[:6], "by": "王工", **body})
                assert reply.get("ok"), reply
            alarm = gateway.rules.alarm("pump_1.pump_trip")
            (ticket,) = gateway.rules.tickets()
    raised, acked = (datetime.fromisoformat(alarm[k]) for k in ("raised_at", "acknowledged_at"))
    assert acked >= raised, f"acknowledged {(acked - raised).total_seconds():.0f} s after raising"
    steps = [datetime.fromisoformat(s["at"]) for s in ticket["history"]]
    assert steps == sorted(steps), ticket["history"]


def _summary(tap: Tap, ticket: str) -> dict:
    raised = Counter(e.body["alarm"] for e in alarm_events(tap, "raised"))
    return {
        "breached": len(ticket_events(tap, "sla_breached", ticket)),
        "escalated": len(ticket_events(tap, "escalated", ticket)),
        "warned": len(ticket_events(tap, "sla_warning", ticket)),
        "opened": len(ticket_events(tap, "opened")),
        "recurred": len(ticket_events(tap, "recurred")),
        "raised": dict(raised),
        "rollups": len(rollups(tap)),
        "polls": len(tap.of("pump_1")),
    }
