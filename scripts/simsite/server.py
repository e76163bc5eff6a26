"""A simulated site: one pymodbus TCP server per device, its registers fed by a model.

Each device's registers are an image encoded from its model with the profile's own
codecs (the same ones the gateway decodes with), refreshed every tick. The server copies
the image into pymodbus's datastore from its request hook, so a read always sees the
latest tick, and a write is decoded back into the model, which is how a setpoint written
by the gateway takes effect.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.decode import Codec, codec_for
from gateway.config.models import Device, Profile, SiteConfig
from simsite.dynamics import FAULTS, Model, SimClock, make_model

log = structlog.get_logger(__name__)

_TABLE_OF_FUNCTION = {3: "holding", 6: "holding", 16: "holding", 23: "holding", 4: "input"}


class _Point:
    __slots__ = ("name", "table", "address", "codec", "writable")

    def __init__(self, name: str, table: str, address: int, codec: Codec, writable: bool) -> None:
        self.name, self.table, self.address = name, table, address
        self.codec, self.writable = codec, writable


class SimulatedDevice:
    """One device: a model, its register image and the pymodbus server answering for it."""

    def __init__(self, device: Device, profile: Profile, model: Model, host: str | None = None) -> None:
        self.device = device
        self.profile = profile
        self.model = model
        self.host = host or device.connection.host
        self.port = device.connection.port
        self.points = [
            _Point(name, p.table, p.address, codec_for(p, profile.order), p.writable)
            for name, p in profile.points.items()
        ]
        # table -> (first address, register words): contiguous from the first point to the
        # last, so reads that span unused registers succeed, as on most real devices
        self.image: dict[str, tuple[int, list[int]]] = {}
        for table in ("holding", "input"):
            points = [p for p in self.points if p.table == table]
            if points:
                start = min(p.address for p in points)
                end = max(p.address + p.codec.count for p in points)
                self.image[table] = (start, [0] * (end - start))
        self.shown: dict[str, float] = {}  # the engineering values the registers hold now
        self.mode: str | None = None  # the device-level fault being played, if any
        self._wake = asyncio.Event()
        self._server: ModbusTcpServer | None = None
        self.refresh()

    def refresh(self) -> None:
        """Encode the model's values into the register image."""
        for point in self.points:
            value = self.model.values.get(point.name, 0)
            words = _encode_clamped(point.codec, value)
            start, image = self.image[point.table]
            offset = point.address - start
            image[offset : offset + len(words)] = words
            self.shown[point.name] = point.codec.decode(words)

    def _simdevice(self) -> SimDevice:
        def block(table: str) -> list[SimData]:
            if table not in self.image:
                return [SimData(0, datatype=DataType.INVALID)]
            start, image = self.image[table]
            return [SimData(start, values=list(image), datatype=DataType.REGISTERS)]

        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.device.connection.unit,
            simdata=(bits, list(bits), block("holding"), block("input")),
            action=self._on_request,
        )

    async def start(self) -> None:
        self._server = ModbusTcpServer(self._simdevice(), address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        log.info("simulated device serving", device=self.device.id, host=self.host, port=self.port)

    async def stop(self) -> None:
        self._wake.set()  # release requests held by a "silent" fault
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    def play(self, mode: str | None) -> None:
        """Answer requests per `mode`: "silent" holds them, "exception" refuses them, None serves."""
        self.mode = mode
        if mode == "silent":
            self._wake.clear()
        else:
            self._wake.set()

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's hook before it answers: serve the image, take writes into the model."""
        if self.mode == "silent":
            await self._wake.wait()  # never answer while the fault lasts
            return ExcCodes.DEVICE_BUSY
        if self.mode == "exception":
            return ExcCodes.DEVICE_FAILURE
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None or table not in self.image:
            return ExcCodes.ILLEGAL_ADDRESS
        start, image = self.image[table]
        offset = address - start_address
        if set_values is None:
            registers[offset : offset + count] = image[offset : offset + count]
            return None
        return self._write(table, address, [int(v) for v in set_values], start, image)

    def _write(self, table: str, address: int, words: list[int], start: int, image: list[int]) -> ExcCodes | None:
        """Accept a write only if it covers writable points exactly, like a strict device."""
        end = address + len(words)
        covered = [p for p in self.points if p.table == table and address <= p.address < end]
        if not covered or any(not p.writable or p.address + p.codec.count > end for p in covered):
            return ExcCodes.ILLEGAL_ADDRESS
        if sum(p.codec.count for p in covered) != len(words):
            return ExcCodes.ILLEGAL_ADDRESS
        image[address - start : end - start] = words
        for point in covered:
            offset = point.address - start
            value = point.codec.decode(image[offset : offset + point.codec.count])
            self.model.write(point.name, value)
            self.shown[point.name] = value
            log.info("simulated device written", device=self.device.id, point=point.name, value=value)
        return None


def _encode_clamped(codec: Codec, value: float) -> list[int]:
    """Registers for `value`, pinned to the type's range rather than failing the tick."""
    try:
        return codec.encode(value)
    except ValueError:
        low, high = codec.raw_range
        raw = high if (value - codec.offset) / codec.scale > 0 else low
        return codec.encode(raw * codec.scale + codec.offset)


class SimulatedSite:
    """Every device of a site, served over Modbus TCP and moving on a shared simulated clock.

    `speed` is simulated seconds per real second (60: a simulated hour per minute), so
    a demo shows the day's demand curve; `tick` is how often registers are refreshed.
    `host` overrides each device's address to listen on (e.g. "0.0.0.0").
    """

    def __init__(
        self,
        config: SiteConfig,
        seed: int | None = None,
        *,
        tick: float = 0.5,
        speed: float = 60.0,
        host: str | None = None,
    ) -> None:
        self.config = config
        self.tick = tick
        self.clock = SimClock(time.time(), speed, config.site.timezone)
        self.devices: dict[str, SimulatedDevice] = {}
        for device in config.devices:
            if not device.enabled:
                continue
            profile = config.profiles[device.profile]
            rng = random.Random(f"{seed}:{device.id}") if seed is not None else random.Random()
            self.devices[device.id] = SimulatedDevice(device, profile, make_model(profile, rng), host)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve every device; raise if a port cannot be bound."""
        self.advance(0.0)
        try:
            for sim in self.devices.values():
                await sim.start()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="simsite")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for sim in self.devices.values():
            await sim.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            self.advance(now - last)
            last = now

    def advance(self, real_seconds: float) -> None:
        """Move the simulation on by `real_seconds` of wall-clock time, now (ticks call this too)."""
        dt = self.clock.advance(real_seconds)
        hour = self.clock.hour
        for sim in self.devices.values():
            sim.model.step(dt, hour)
            sim.refresh()

    def value(self, device_id: str, point: str) -> Any:
        """The engineering value `point` holds now, as its registers encode it."""
        return self._device(device_id).shown[point]

    async def set_fault(self, device_id: str, kind: str) -> None:
        """Play a fault until `clear`.

        pump_trip: the pump stops with a fault code. stop_answering: the server closes
        and refuses connections. silent: connections are accepted but nothing answers.
        exception: every request is answered with a Modbus exception.
        """
        sim = self._device(device_id)
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULTS)}")
        if kind == "pump_trip":
            sim.model.set_fault(kind)
            sim.refresh()
        elif kind == "stop_answering":
            await sim.stop()
        else:
            sim.play(kind)
        log.info("fault set", device=device_id, fault=kind)

    async def clear(self, device_id: str) -> None:
        """End every fault of a device: the pump resets, the server answers again."""
        sim = self._device(device_id)
        sim.model.clear()
        sim.refresh()
        sim.play(None)
        if not sim.serving:
            await sim.start()
        log.info("faults cleared", device=device_id)

    def _device(self, device_id: str) -> SimulatedDevice:
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"no simulated device {device_id!r}; have {', '.join(self.devices)}") from None
