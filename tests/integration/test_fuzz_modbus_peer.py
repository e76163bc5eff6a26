"""A hostile Modbus TCP peer: whatever it answers, a read ends as a batch of right values or
a DriverError with a quality — never another exception, never a wrong value — and the
device is read correctly again as soon as the peer behaves.

The peer is a raw asyncio server on 127.0.0.1 that answers each request as the example
tells it to: random bytes, a truncated or over-long frame, a wrong transaction id, unit or
function code, a byte count that lies, an exception code, silence, or a closed socket.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from drivers.base import DriverError
from drivers.registry import create_driver
from gateway.batch import Batch, Quality
from gateway.config.models import Device, ModbusPoint, ModbusTcpConnection, Profile

pytestmark = pytest.mark.integration

REGISTERS = [4512, 153, 452, 1, 0x42F6, 0xE979]  # uint16s, then float32 123.456 ABCD
PROFILE = Profile(
    id="pump", name="pump", system="test", order="ABCD",
    points={
        "frequency": ModbusPoint(address=0, scale=0.01),
        "current": ModbusPoint(address=1, scale=0.1),
        "pressure": ModbusPoint(address=2, scale=0.001),
        "running": ModbusPoint(address=3),
        "flow": ModbusPoint(address=4, type="float32"),
    },
)
EXPECTED = {"frequency": 45.12, "current": 15.3, "pressure": 0.452, "running": 1}
Answer = Callable[[bytes], bytes | None]  # request frame -> reply (None: stay silent)


def good_reply(request: bytes) -> bytes:
    tid, _proto, _length, unit, function = struct.unpack(">HHHBB", request[:8])
    start, count = struct.unpack(">HH", request[8:12])
    words = (REGISTERS + [0] * 200)[start:start + count]
    pdu = struct.pack(">BB", function, 2 * len(words)) + struct.pack(f">{len(words)}H", *words)
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, Answer]:
    """One way of answering badly, with a name for the statistics."""
    kind = draw(st.sampled_from([
        "random", "truncated", "padded", "wrong_tid", "wrong_unit", "wrong_function",
        "lying_count", "exception", "silent", "short_data",
    ]))
    noise = draw(st.binary(min_size=1, max_size=40))
    cut = draw(st.integers(1, 12))
    code = draw(st.integers(1, 255))

    def answer(request: bytes) -> bytes | None:
        good = good_reply(request)
        if kind == "random":
            return noise
        if kind == "truncated":
            return good[:max(1, len(good) - cut)]
        if kind == "padded":
            return good + noise
        if kind == "wrong_tid":
            return struct.pack(">H", (struct.unpack(">H", good[:2])[0] + cut) & 0xFFFF) + good[2:]
        if kind == "wrong_unit":
            return good[:6] + bytes([(good[6] + cut) & 0xFF]) + good[7:]
        if kind == "wrong_function":
            return good[:7] + bytes([(good[7] + cut) & 0x7F or 1]) + good[8:]
        if kind == "lying_count":
            return good[:8] + bytes([(good[8] + 2 * cut) & 0xFF]) + good[9:]
        if kind == "exception":
            pdu = bytes([good[7] | 0x80, code])
            return good[:4] + struct.pack(">HB", 3, good[6]) + pdu
        if kind == "short_data":  # a well-formed frame carrying fewer registers than asked
            pdu = bytes([good[7], 2]) + good[9:11]
            return good[:4] + struct.pack(">HB", len(pdu) + 1, good[6]) + pdu
        return None  # silent: the client must time out

    return kind, answer


class Peer:
    """A Modbus TCP server whose answers the test sets per request."""

    def __init__(self) -> None:
        self.answer: Answer = good_reply
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(6)
                (length,) = struct.unpack(">H", header[4:6])
                request = header + await reader.readexactly(length)
                reply = self.answer(request)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test stopped the peer
        finally:
            writer.close()


def device(device_id: str, port: int) -> Device:
    return Device(id=device_id, profile="pump", retries=0, connection=ModbusTcpConnection(
        host="127.0.0.1", port=port, timeout=0.3))


def assert_true_or_marked(batch: Batch) -> None:
    """Each point either carries its right value with good quality, or no value and a bad
    quality (a device exception is per request, so the batch still comes)."""
    qualities = batch.quality or [Quality.GOOD] * len(batch.values)
    expected = {**EXPECTED, "flow": 123.456}
    for point, value, quality in zip(batch.points, batch.values, qualities, strict=True):
        if quality == Quality.GOOD:
            assert value == pytest.approx(expected[point], rel=1e-6), point
        else:
            assert value is None, f"{point} is {quality} but carries {value!r}"


def assert_right(batch: Batch) -> None:
    values = dict(zip(batch.points, batch.values, strict=True))
    for point, value in EXPECTED.items():
        assert values[point] == pytest.approx(value)
    assert values["flow"] == pytest.approx(123.456, rel=1e-6)
    assert batch.quality is None or all(q == Quality.GOOD for q in batch.quality)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=hostile())
def test_a_hostile_reply_is_a_failed_read_or_right_values_and_the_next_good_one_reads(case) -> None:
    kind, answer = case
    event(kind)

    async def scenario() -> None:
        peer, neighbour = Peer(), Peer()
        port, neighbour_port = await peer.start(), await neighbour.start()
        driver = create_driver(device("pump", port), PROFILE)
        other = create_driver(device("pump_2", neighbour_port), PROFILE)
        await driver.start(lambda batch: None)
        await other.start(lambda batch: None)
        try:
            peer.answer = answer
            hostile_read, neighbour_read = await asyncio.gather(
                driver.read(), other.read(), return_exceptions=True)
            assert isinstance(neighbour_read, Batch), f"the neighbour failed: {neighbour_read!r}"
            assert_right(neighbour_read)
            if isinstance(hostile_read, BaseException):
                assert isinstance(hostile_read, DriverError), f"{kind}: {hostile_read!r}"
                assert hostile_read.quality != Quality.GOOD
            else:  # an exception reply marks its points; padding may leave the values right
                event(f"{kind}: batch, {'marked' if hostile_read.quality else 'right values'}")
                assert_true_or_marked(hostile_read)
            peer.answer = good_reply
            recovered = None
            for _ in range(3):  # a reply left in flight may still spoil the first read
                try:
                    recovered = await driver.read()
                    break
                except DriverError:
                    await asyncio.sleep(0.05)
            assert recovered is not None, f"{kind}: the device was not read again"
            assert_right(recovered)
        finally:
            await driver.stop()
            await other.stop()
            await peer.stop()
            await neighbour.stop()

    asyncio.run(scenario())
