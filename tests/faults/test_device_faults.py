"""Devices misbehave: answers that are garbage, truncated, late, exception responses, a
connection closed on every request, a TCP server that accepts and never answers, and a
serial line that disappears (socat killed) and comes back. The faulty device is marked
offline with its points' quality, its neighbours keep polling at their rate, and polling
resumes when it answers again.

Exact counts: every poll is one request (one block of three registers) and one batch, so
the batches that came back good must be exactly the requests the device answered right.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from faultlib.modbus_device import FaultyModbusDevice
from faultlib.serial_line import SerialLine
from faultsite import REGISTERS, Tap, device, modbus_tcp, running_gateway, stop_polling, until
from faultsite import write_site as write_fault_site

from gateway.batch import Quality

POLL = 0.1  # seconds, every device
BAUD = 38400

# fault -> the quality its polls carry and whether it takes the device offline
FAULTS = {
    "garbage": (Quality.COMM_FAILURE, True),
    "truncated": (Quality.COMM_FAILURE, True),
    "silent": (Quality.COMM_FAILURE, True),
    "late": (Quality.COMM_FAILURE, True),
    "close": (Quality.COMM_FAILURE, True),
    "exception": (Quality.DEVICE_EXCEPTION, False),  # it answers: online, points refused
}


def rtu(port, unit: int) -> dict:
    return {"type": "modbus_rtu", "port": str(port), "baudrate": BAUD, "unit": unit,
            "timeout": "200ms"}


def polls_since(tap: Tap, device_id: str, since: float) -> list:
    return [b for b in tap.of(device_id) if b.ts >= since]


def statuses_since(tap: Tap, device_id: str, since: float) -> list[bool | None]:
    return [e.body.get("online") for e in list(tap.events)
            if e.type == "device_status" and e.device == device_id and e.ts >= since]


@pytest.fixture
def rig(tmp_path):
    healthy = FaultyModbusDevice(holding=list(REGISTERS)).start()
    faulty = FaultyModbusDevice(holding=list(REGISTERS)).start()
    mute = FaultyModbusDevice(holding=list(REGISTERS))
    mute.mute_accept()
    mute.start()
    line = SerialLine(tmp_path / "line", {1: list(REGISTERS), 2: list(REGISTERS)}, BAUD).start()
    site = write_fault_site(
        tmp_path / "site", site_id=f"dev-{uuid.uuid4().hex[:8]}",
        devices=[
            device("healthy", modbus_tcp(healthy.port), poll="100ms"),
            device("faulty", modbus_tcp(faulty.port), poll="100ms"),
            device("mute", modbus_tcp(mute.port), poll="100ms"),
            device("serial_1", rtu(line.gateway_end, 1), poll="100ms"),
            device("serial_2", rtu(line.gateway_end, 2), poll="100ms"),
        ],
    )
    try:
        yield site, healthy, faulty, mute, line
    finally:
        line.stop()
        for d in (healthy, faulty, mute):
            d.stop()


async def test_faulty_devices_are_marked_offline_while_their_neighbours_keep_their_rate(rig):
    site, healthy, faulty, mute, line = rig
    seen: dict[str, tuple[int, list[bool | None]]] = {}
    async with running_gateway(site) as (gateway, tap):
        started = time.time()
        await until(lambda: tap.good("faulty") and tap.good("serial_1") and tap.good("serial_2"),
                    "every answering device to be read")
        for fault, (quality, offline) in FAULTS.items():
            since = time.time()
            faulty.play(fault, 4 if fault == "exception" else 1.0)

            def bad(since=since, quality=quality) -> list:
                return [b for b in polls_since(tap, "faulty", since)
                        if b.quality == [quality] * 3]
            await until(lambda b=bad: len(b()) >= 4, f"polls carrying {quality} ({fault})")
            if offline:
                await until(lambda s=since: False in statuses_since(tap, "faulty", s),
                            f"the device offline ({fault})")
            back = time.time()
            faulty.play("ok")
            await until(lambda b=back: [x for x in polls_since(tap, "faulty", b) if x.quality is None],
                        f"polls to resume after {fault}")
            statuses = statuses_since(tap, "faulty", since)
            seen[fault] = (len(bad()), statuses)
            assert statuses == ([False, True] if offline else []), (fault, statuses)

        # the serial line is pulled out, then plugged back in
        since = time.time()
        line.unplug()
        for unit in ("serial_1", "serial_2"):
            await until(lambda u=unit: False in statuses_since(tap, u, since), f"{unit} offline")
        plugged = time.time()
        line.plug()
        for unit in ("serial_1", "serial_2"):
            await until(lambda u=unit: [b for b in polls_since(tap, u, plugged) if b.quality is None],
                        f"{unit} read again after the line came back", timeout=30)
        # the end: no right answer may be in flight when polling stops (it would be answered
        # but never become a batch), so the devices fall silent first
        cut = time.time()
        elapsed = cut - started
        healthy.play("silent")
        faulty.play("silent")
        await asyncio.sleep(3 * 0.3)  # the request timeout, thrice
        stats = {d.device.id: d.stats() for d in gateway.drivers}
        await stop_polling(gateway)

    # one batch per poll; good batches are exactly the right answers the devices gave
    for name, dev in (("healthy", healthy), ("faulty", faulty)):
        answers = [(round(at, 3), mode) for at, _unit, _function, mode in dev.log]
        polls = [(round(b.ts, 3), b.quality and b.quality[0]) for b in tap.of(name)]
        assert len(tap.good(name)) == dev.count("ok"), (name, answers, polls)
    assert [b for b in tap.failed("healthy") if b.ts < cut] == []
    assert statuses_since(tap, "healthy", 0)[:1] == [True]
    expected = elapsed / POLL
    assert len(tap.good("healthy")) >= 0.7 * expected, (len(tap.good("healthy")), expected)

    # the device that accepts and never answers: offline once, every point comm_failure,
    # probed with backoff rather than at its poll rate
    mute_batches = tap.of("mute")
    assert mute.count() == 0 and statuses_since(tap, "mute", 0) == [False]
    assert all(b.quality == [Quality.COMM_FAILURE] * 3 for b in mute_batches)
    assert 3 <= len(mute_batches) < expected / 4, (len(mute_batches), expected)

    for unit in ("serial_1", "serial_2"):
        assert statuses_since(tap, unit, 0) == [True, False, True]
        lost = [b for b in tap.failed(unit) if b.quality != [Quality.COMM_FAILURE] * 3]
        assert lost == []
    print(f"\n{elapsed:.1f} s: healthy {len(tap.good('healthy'))} good polls of "
          f"{expected:.0f} ticks, none failed; faulty: {len(tap.good('faulty'))} good = "
          f"{faulty.count('ok')} right answers, per fault (bad polls, statuses) {seen}; mute "
          f"probed {len(mute_batches)} times; serial units {len(tap.good('serial_1'))} / "
          f"{len(tap.good('serial_2'))} good polls around the unplugging; stats {stats}")
