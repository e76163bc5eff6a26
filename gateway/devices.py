"""The running devices: per device a driver, its poll timers (or silence watch) and its
periodic status, on the lines (gateway/lines.py) devices share.

Devices start and stop by id, so a reload restarts the ones it changed while the others
keep polling: their driver, timers and statistics are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import structlog

from drivers.base import Driver
from gateway.config.models import BacnetLocal, SiteConfig
from gateway.health import DeviceHealth
from gateway.lines import LineKey, Lines, Staging, line_name
from gateway.pipeline import Pipeline
from gateway.poller import poll_forever, poll_specs, report_status_forever, watch_forever

log = structlog.get_logger(__name__)

DRIVER_START_TIMEOUT = 10.0  # seconds; a driver still starting then is polled anyway
DRIVER_STOP_TIMEOUT = 0.5  # seconds for the drivers stopping together
LINES_CLOSE_TIMEOUT = 1.2  # seconds for buses, clients and the BACnet socket to close


class Devices:
    """Drivers by device id with their tasks and health; `lines` owns what they share."""

    def __init__(self, pipeline: Pipeline, bacnet: BacnetLocal,
                 maintenance_until: Callable[[str], float | None]) -> None:
        self.pipeline = pipeline
        self.lines = Lines(bacnet)
        self.health: dict[str, DeviceHealth] = {}
        self.started_at: dict[str, float] = {}  # device -> when its driver (re)started
        self._maintenance_until = maintenance_until
        self._drivers: dict[str, Driver] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    @property
    def drivers(self) -> list[Driver]:
        return list(self._drivers.values())

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [task for tasks in self._tasks.values() for task in tasks]

    async def start(self, drivers: Iterable[Driver]) -> None:
        """Start the drivers together, each with its poll timers, silence watch and status.

        Together, and each within DRIVER_START_TIMEOUT: one device slow to start (a dead
        BACnet controller refusing COV subscriptions one timeout at a time) must delay
        neither its neighbours nor the gateway's readiness. A device that ran before (a
        reload restarting it) keeps its health: its counts go on, its state is confirmed
        or changed by the new driver's polls.
        """
        await asyncio.gather(*(self._start(driver) for driver in drivers))

    async def _start(self, driver: Driver) -> None:
        device = driver.device
        self._drivers[device.id] = driver  # stop() stops it even if its start is still running
        self.started_at[device.id] = time.time()
        health = self.health.get(device.id)
        if health is None:
            health = self.health[device.id] = DeviceHealth(device.id, device.offline_after)
        health.offline_after = device.offline_after
        health.maintenance_until = self._maintenance_until(device.id)
        tasks = self._tasks.setdefault(device.id, [])
        try:
            await asyncio.wait_for(driver.start(self.pipeline.emit_batch), DRIVER_START_TIMEOUT)
        except TimeoutError:
            log.warning("driver slow to start; polling it anyway", device=device.id,
                        seconds=DRIVER_START_TIMEOUT)
        except Exception as exc:  # polls will report the device's state as quality
            log.error("driver failed to start; polling it anyway", device=device.id,
                      error=repr(exc))
        if self._drivers.get(device.id) is not driver:  # stopped while it started
            return
        # one timer per poll group; the first probes the device while it is offline
        for number, spec in enumerate(poll_specs(driver)):
            task = poll_forever(driver, self.pipeline, health, spec, probe=number == 0)
            tasks.append(asyncio.create_task(task, name=f"poll:{device.id}:{spec.group}"))
        if not driver.poll_groups:  # a push device (MQTT): watched for silence instead
            silence = getattr(device.connection, "silence", 300.0)
            watch = watch_forever(driver, self.pipeline, health, silence)
            tasks.append(asyncio.create_task(watch, name=f"watch:{device.id}"))
        status = report_status_forever(driver, self.pipeline, health)
        tasks.append(asyncio.create_task(status, name=f"status:{device.id}"))

    async def stop(self, devices: Iterable[str], *, forget: Iterable[str] = ()) -> None:
        """Cancel these devices' tasks and stop their drivers (lines stay open); the
        health of the ones in `forget` (removed or disabled) goes too."""
        chosen = list(devices)
        tasks = [task for device in chosen for task in self._tasks.pop(device, [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        drivers = [d for d in (self._drivers.pop(device, None) for device in chosen) if d]
        stopping = asyncio.gather(*(d.stop() for d in drivers), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping, DRIVER_STOP_TIMEOUT)
        for device in forget:
            self.health.pop(device, None)
            self.started_at.pop(device, None)

    async def stop_all(self) -> None:
        """Every device, then every line (buses, clients and the BACnet socket)."""
        await self.stop(list(self._drivers) + [d for d in self._tasks if d not in self._drivers])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lines.close(), LINES_CLOSE_TIMEOUT)

    async def replace(self, stop: Iterable[str], forget: Iterable[str], staging: Staging,
                      drivers: list[Driver], unused: Iterable[LineKey]) -> list[str]:
        """A reload's device changes: stop `stop`, close the lines rebuilt or left unused,
        then start `drivers` (made on `staging`). Returns the lines closed, by name."""
        await self.stop(stop, forget=forget)
        closed = await staging.commit(unused)
        await self.start(drivers)
        return [line_name(key) for key in closed]

    def status(self) -> dict[str, dict[str, object]]:
        """Each device's health, its driver's request statistics and when it (re)started."""
        stats = {device: driver.stats() for device, driver in self._drivers.items()}
        return {
            device: {**health.snapshot(), "requests": stats.get(device, {}),
                     "driver_started": self.started_at.get(device)}
            for device, health in self.health.items()
        }


def create_drivers(config: SiteConfig, lines: Lines | Staging,
                    only: list[str] | None = None) -> list[Driver]:
    """A driver for every enabled device (or the `only` ones); nothing connects until it
    is started. ValueError (naming the device) for one no driver can serve."""
    chosen = None if only is None else set(only)
    drivers = []
    for device in config.devices:
        if not device.enabled or (chosen is not None and device.id not in chosen):
            continue
        drivers.append(lines.create(device, config.profiles[device.profile]))
    return drivers
