"""A simulated site: one pymodbus TCP server per device, its tables fed by a model.

Each device's tables are an image encoded from its model (see `image.py`), refreshed
every tick. The server copies the image into pymodbus's datastore from its request hook,
so a read always sees the latest tick, and a write is decoded back into the model, which
is how a setpoint or a relay written by the gateway takes effect.
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
from pymodbus.simulator.simutils import SimUtils

from gateway.config.models import BIT_TABLES, Device, Profile, SiteConfig
from simsite.dynamics import COMM_FAULTS, FAULTS, Composite, SimClock, make_model
from simsite.image import RegisterImage

log = structlog.get_logger(__name__)

_TABLE_OF_FUNCTION = {
    1: "coil", 5: "coil", 15: "coil", 2: "discrete",
    3: "holding", 6: "holding", 16: "holding", 23: "holding", 4: "input",
}


class SimulatedDevice:
    """One device: a model, its register image and the pymodbus server answering for it."""

    def __init__(self, device: Device, profile: Profile, model: Composite, host: str | None = None) -> None:
        self.device = device
        self.profile = profile
        self.model = model
        self.host = host or device.connection.host
        self.port = device.connection.port
        self.image = RegisterImage(profile)
        self.shown: dict[str, Any] = {}  # the values the tables hold now
        self.mode: str | None = None  # the communication fault being played, if any
        self._wake = asyncio.Event()
        self._server: ModbusTcpServer | None = None
        self.refresh()

    def refresh(self) -> None:
        """Encode the model's values into the image."""
        self.shown = self.image.encode(self.model.values)

    def _simdevice(self) -> SimDevice:
        def registers(table: str) -> list[SimData]:
            if table not in self.image.words:
                return [SimData(0, datatype=DataType.INVALID)]
            start, words = self.image.words[table]
            return [SimData(start, values=list(words), datatype=DataType.REGISTERS)]

        def bits(table: str) -> list[SimData]:
            return [SimData(0, values=list(self.image.bits.get(table, [False] * 16)), datatype=DataType.BITS)]

        return SimDevice(
            id=self.device.connection.unit,
            simdata=(bits("coil"), bits("discrete"), registers("holding"), registers("input")),
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
        """pymodbus's hook before it answers: serve the image, take writes into the model.

        For coils and discrete inputs pymodbus passes the bit address and the number of
        16-bit words the bits span; `registers` is then the table packed 16 bits a word.
        """
        if self.mode == "silent":
            await self._wake.wait()  # never answer while the fault lasts
            return ExcCodes.DEVICE_BUSY
        if self.mode == "exception":
            return ExcCodes.DEVICE_FAILURE
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table in BIT_TABLES:
            if table not in self.image.bits:
                return ExcCodes.ILLEGAL_ADDRESS
            if set_values is not None:
                refused = self._write(table, address, [int(bool(v)) for v in set_values])
                if refused is not None:
                    return refused
            packed = SimUtils.bitsToRegisters(self.image.bits[table])
            registers[: len(packed)] = packed
            return None
        if table is None or table not in self.image.words:
            return ExcCodes.ILLEGAL_ADDRESS
        start, words = self.image.words[table]
        if set_values is not None:
            refused = self._write(table, address, [int(v) for v in set_values])
            if refused is not None:
                return refused
        offset = address - start_address
        registers[offset : offset + count] = words[offset : offset + count]
        return None

    def _write(self, table: str, address: int, data: list[int]) -> ExcCodes | None:
        """Accept a write only if it covers writable points exactly, like a strict device."""
        covered = self.image.covering(table, address, len(data))
        end = address + len(data)
        spanned = {a for p in covered for a in range(p.address, p.end)}
        if (
            not covered
            or any(not p.writable or p.address < address or p.end > end for p in covered)
            or spanned != set(range(address, end))
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        if table in BIT_TABLES:
            self.image.bits[table][address:end] = [bool(v) for v in data]
        else:
            start, words = self.image.words[table]
            words[address - start : end - start] = data
        for point in covered:
            value = self.image.read(point)
            self.model.write(point.name, int(value) if isinstance(value, bool) else value)
            log.info("simulated device written", device=self.device.id, point=point.name, value=value)
        self.refresh()
        return None


def link_meters(config: SiteConfig, devices: dict[str, SimulatedDevice]) -> set[str]:
    """Make each simulated water main feed its group's simulated sub-meters (site.yaml
    `energy.groups`), so the main counts the sub-meters' sum plus the common area and a
    small loss, as a real building's would; return the ids of the sub-meters now fed.

    Groups whose meters are not all simulated water meters here (a test serving part of
    the site, electricity) are left alone: each meter then runs on its own.
    """
    from gateway.config.energy_loader import group_meters, site_meters
    from simsite.models.meters import WaterMeter

    def water_model(device_id: str) -> WaterMeter | None:
        sim = devices.get(device_id)
        known = getattr(getattr(sim, "model", None), "known", None)
        return known if isinstance(known, WaterMeter) else None

    meters = site_meters(config)
    fed: set[str] = set()
    for group in config.energy.groups:
        master, members = group_meters(group, meters)
        if group.commodity != "water" or master is None or not members:
            continue
        main = water_model(master.device)
        subs = [water_model(m.device) for m in members]
        if main is None or main.subs or any(s is None or s.fed for s in subs):
            continue
        weights = [main.rng.uniform(0.8, 1.2) for _ in subs]
        main.feed([(sub, w / sum(weights)) for sub, w in zip(subs, weights, strict=True) if sub])
        fed |= {m.device for m in members}
        log.info("simulated water main feeds its sub-meters", main=master.device,
                 subs=[m.device for m in members])
    return fed


class SimulatedSite:
    """Every device of a site, served over Modbus TCP and moving on a shared simulated clock.

    `speed` is simulated seconds per real second (60: a simulated hour per minute), so
    a demo shows the day's demand curve; `tick` is how often registers are refreshed.
    `host` overrides each device's address to listen on (e.g. "0.0.0.0"); `start` is the
    simulated clock's first moment (epoch seconds; default now), e.g. a morning rush.
    """

    def __init__(
        self,
        config: SiteConfig,
        seed: int | None = None,
        *,
        tick: float = 0.5,
        speed: float = 60.0,
        host: str | None = None,
        start: float | None = None,
    ) -> None:
        self.config = config
        self.tick = tick
        self.clock = SimClock(time.time() if start is None else start, speed, config.site.timezone)
        self.devices: dict[str, SimulatedDevice] = {}
        for device in config.devices:
            if not device.enabled:
                continue
            profile = config.profiles[device.profile]
            rng = random.Random(f"{seed}:{device.id}") if seed is not None else random.Random()
            if device.connection.type == "mqtt":  # a paho client publishing to a broker
                from simsite.mqtt.device import make_mqtt_device

                cards = [card for guard in config.patrols.guards for card in guard.cards]
                mqtt_sim = make_mqtt_device(device, profile, rng, config.site.timezone, cards=cards)
                if mqtt_sim is not None:
                    self.devices[device.id] = mqtt_sim  # type: ignore[assignment]
                continue
            if device.connection.type == "bacnet_ip":  # a bacpypes3 application, not a Modbus server
                from simsite.bacnet.devices import SimulatedBacnetDevice
                from simsite.bacnet.models import make_bacnet_model

                model = make_bacnet_model(profile, rng)
                self.devices[device.id] = SimulatedBacnetDevice(device, profile, model, host)  # type: ignore[assignment]
                continue
            self.devices[device.id] = SimulatedDevice(device, profile, make_model(profile, rng), host)
        self._task: asyncio.Task[None] | None = None
        self._host = host
        self.brokers: list[Any] = []  # embedded MQTT brokers (simsite.mqtt.broker), if any
        fed = link_meters(config, self.devices)
        # a main moves its sub-meters in its own step: it steps first, they merge after
        self._order = sorted(self.devices, key=lambda device_id: device_id in fed)

    async def start(self) -> None:
        """Serve every device; raise if a port cannot be bound."""
        self.advance(0.0)
        try:
            if any(device.connection.type == "mqtt" for device in self.config.devices):
                from simsite.mqtt.broker import brokers_to_embed

                self.brokers = brokers_to_embed(self.config.devices, self._host)
                for broker in self.brokers:
                    await broker.start()
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
        for broker in self.brokers:
            await broker.stop()

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
        now = self.clock.time
        for device_id in self._order:
            sim = self.devices[device_id]
            sim.model.step(dt, now)
            sim.refresh()

    def value(self, device_id: str, point: str) -> Any:
        """The value `point` holds now, as the gateway decodes its registers or bit."""
        return self._device(device_id).shown[point]

    def faults(self, device_id: str) -> tuple[str, ...]:
        """The scenarios `device_id` can play: its equipment's own, then the server's."""
        sim = self._device(device_id)
        equipment = getattr(sim.model, "faults", sim.model.FAULTS)  # a Composite knows its own
        return (*equipment, *getattr(sim, "comm_faults", COMM_FAULTS))

    async def set_fault(self, device_id: str, kind: str) -> None:
        """Play a fault until `clear`.

        Equipment faults (pump_trip, low_pressure, elevator_stuck, fire_alarm, sump_high,
        door_forced; fan_fail, filter_clogged, supply_drift on the BACnet plant) change what
        the device reads; see docs/profiles.md and docs/bacnet.md. Communication
        faults: stop_answering closes the server and refuses connections; silent (and
        meter_silent, for meters) accepts connections but answers nothing; exception
        answers every request with a Modbus exception.
        """
        sim = self._device(device_id)
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULTS)}")
        if kind not in self.faults(device_id):
            raise ValueError(
                f"{device_id} ({sim.profile.id}) cannot play {kind!r}; it can play "
                + ", ".join(self.faults(device_id))
            )
        if kind == "stop_answering":
            await sim.stop()
        elif kind in ("silent", "meter_silent", "exception"):
            sim.play("exception" if kind == "exception" else "silent")
        else:
            sim.model.set_fault(kind)
            sim.refresh()
        log.info("fault set", device=device_id, fault=kind)

    async def clear(self, device_id: str) -> None:
        """End every fault of a device: the equipment recovers, the server answers again."""
        sim = self._device(device_id)
        sim.model.clear()
        sim.refresh()
        sim.play(None)
        if not sim.serving:
            await sim.start()
        log.info("faults cleared", device=device_id)

    def truth(self, device_id: str) -> float:
        """A water meter's exact simulated volume (m³, before the pulses round it down)."""
        return float(self._device(device_id).model.known.volume)

    def _device(self, device_id: str) -> SimulatedDevice:
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"no simulated device {device_id!r}; have {', '.join(self.devices)}") from None
