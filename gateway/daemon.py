"""The daemon: wires drivers, the pipeline, the outbox and the sinks, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from drivers.base import Driver
from drivers.registry import DriverSet
from gateway import __version__
from gateway.batch import Event
from gateway.catalog import Catalog
from gateway.commands import CommandHandler, LocalControl, build_commands
from gateway.commands.local import socket_path
from gateway.config.models import SiteConfig
from gateway.edge import EdgeStages
from gateway.energy.stage import EnergyStage
from gateway.health import DeviceHealth
from gateway.outbox import Outbox
from gateway.pipeline import Pipeline
from gateway.poller import poll_forever, poll_specs, report_status_forever, watch_forever
from gateway.sinks.factory import build_sinks
from gateway.sinks.runner import SinkRunner
from rules.engine.engine import RuleEngine
from rules.engine.events import MAINTENANCE

log = structlog.get_logger(__name__)

STATUS_FILE = "status.json"
STATUS_FILE_EVERY = 5.0  # seconds
DRIVER_START_TIMEOUT = 10.0  # seconds; a driver still starting then is polled anyway
STOP_BUDGET = 4.5  # seconds for the whole shutdown: SIGTERM must end within 5 s


class Gateway:
    """One site's gateway; `start()` then `stop()`, or `run(stop_event)`."""

    def __init__(self, config: SiteConfig, *, data_dir: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`clock` is the rule engine's: tests move it to see what days of downtime do."""
        self.config = config
        self._clock = clock
        self.data_dir = Path(data_dir or config.data_dir)
        self.catalog = Catalog.from_config(config)
        self.outbox = Outbox(
            self.data_dir / "outbox.db",
            flush_interval=config.outbox.flush_interval,
            fsync=config.outbox.fsync,
            max_size=config.outbox.max_size,
        )
        self.edge = EdgeStages(config, self.data_dir, clock=clock)
        self.pipeline = Pipeline(self.outbox, self.edge)
        self.pipeline.listeners.append(self._follow_maintenance)
        self.health: dict[str, DeviceHealth] = {}
        self.driver_set = DriverSet(config.bacnet)  # owns the buses and clients devices share
        self.drivers: list[Driver] = []
        self.runners: list[SinkRunner] = []
        self._poll_tasks: list[asyncio.Task[None]] = []  # the devices' polls, watches and status
        self._sink_tasks: list[asyncio.Task[None]] = []
        self._status_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.commands: CommandHandler | None = None
        self.control: LocalControl | None = None

    async def start(self) -> None:
        await self.outbox.open()
        await self._start_edge()
        for sink, linger in build_sinks(self.config, self.catalog, self.data_dir):
            runner = SinkRunner(sink, self.outbox, linger=linger)
            self.runners.append(runner)
            self._sink_tasks.append(asyncio.create_task(runner.run(), name=f"sink:{sink.name}"))
        await self._start_devices(_create_drivers(self.config, self.driver_set))
        self._status_task = asyncio.create_task(self.write_status_forever(), name="status")
        # last: a command may need every driver. The handler always runs (the local CLI
        # commands through it); it listens upstream only when the platform may command.
        self.commands = build_commands(self)
        self.control = LocalControl(self, self.commands, socket_path(self.data_dir))
        try:
            await self.control.start()
        except BaseException:  # another gateway on this data dir: leave nothing running
            self.control = None
            await self.stop()
            raise
        log.info(
            "gateway started",
            version=__version__, site=self.config.site.id, devices=len(self.drivers),
            sinks=[r.name for r in self.runners], data_dir=str(self.data_dir),
            commands_upstream=self.commands.connection is not None,
        )

    @property
    def rules(self) -> RuleEngine:
        """The rule engine: alarms, tickets, maintenance mode (commands and views use it)."""
        return self.edge.rules

    @property
    def energy(self) -> EnergyStage:
        """The energy stage: meters, manual readings, replacements, snapshots."""
        return self.edge.energy

    async def _start_edge(self) -> None:
        """Restore meters, alarms, tickets and plans, then run their timers.

        Before any driver starts: what ran out while the gateway was down (a delay, a
        shelve, an SLA clock, a maintenance plan, a night window) is in the outbox before
        the first poll.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.edge.start(self.pipeline.emit_all)

    def _follow_maintenance(self, event: Event) -> None:
        """A device entering or leaving maintenance says so in its retained status at once,
        so a platform that connects later still sees it."""
        if event.type != MAINTENANCE or event.device not in self.health:
            return
        health = self.health[event.device]
        modes = self.rules.maintenance_modes()
        health.maintenance_until = modes.get(event.device)
        self.pipeline.emit_event(health.status_event())

    async def _start_devices(self, drivers: list[Driver]) -> None:
        """Start the drivers together, each with its poll timers, silence watch and status.

        Together, and each within DRIVER_START_TIMEOUT: one device slow to start (a dead
        BACnet controller refusing COV subscriptions one timeout at a time) must delay
        neither its neighbours nor the gateway's readiness.
        """
        await asyncio.gather(*(self._start_device(driver) for driver in drivers))

    async def _start_device(self, driver: Driver) -> None:
        device = driver.device
        self.drivers.append(driver)  # stop() stops it even if its start is still running
        health = self.health[device.id] = DeviceHealth(device.id, device.offline_after)
        health.maintenance_until = self.rules.maintenance_modes().get(device.id)
        try:
            await asyncio.wait_for(driver.start(self.pipeline.emit_batch), DRIVER_START_TIMEOUT)
        except TimeoutError:
            log.warning("driver slow to start; polling it anyway", device=device.id,
                        seconds=DRIVER_START_TIMEOUT)
        except Exception as exc:  # polls will report the device's state as quality
            log.error("driver failed to start; polling it anyway", device=device.id,
                      error=repr(exc))
        # one timer per poll group; the first probes the device while it is offline
        for number, spec in enumerate(poll_specs(driver)):
            task = poll_forever(driver, self.pipeline, health, spec, probe=number == 0)
            name = f"poll:{device.id}:{spec.group}"
            self._poll_tasks.append(asyncio.create_task(task, name=name))
        if not driver.poll_groups:  # a push device (MQTT): watched for silence instead
            silence = getattr(device.connection, "silence", 300.0)
            watch = watch_forever(driver, self.pipeline, health, silence)
            self._poll_tasks.append(asyncio.create_task(watch, name=f"watch:{device.id}"))
        status = report_status_forever(driver, self.pipeline, health)
        self._poll_tasks.append(asyncio.create_task(status, name=f"status:{device.id}"))

    async def _stop_devices(self) -> None:
        """Cancel the device tasks, stop the drivers and close the buses they share."""
        tasks, self._poll_tasks = self._poll_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        drivers, self.drivers = self.drivers, []
        await _bounded(asyncio.gather(*(d.stop() for d in drivers), return_exceptions=True), 0.5)
        await _bounded(self.driver_set.close(), 1.2)  # closes run together, each bounded

    async def reload(self, config: SiteConfig) -> dict[str, object]:
        """Apply a changed configuration's devices and profiles without a restart.

        Drivers and their poll tasks restart with the new config; sinks, the outbox and the
        upstream connection keep running, so nothing queued is lost. Every new driver is
        created before an old one stops, so a config no driver can serve (ValueError)
        changes nothing. What only a restart applies is named in "restart_needed".
        """
        async with self._reload_lock:
            driver_set = DriverSet(config.bacnet)
            try:
                drivers = _create_drivers(config, driver_set)
            except ValueError:
                await driver_set.close()
                raise
            before = {d.id: d for d in self.config.devices}
            after = {d.id: d for d in config.devices}
            old_profiles = self.config.profiles
            changed = sorted(
                i for i in after.keys() & before.keys()
                if after[i] != before[i]
                or config.profiles[after[i].profile] != old_profiles.get(before[i].profile)
            )
            restart_needed = [
                name for name in ("site", "sinks", "upstream", "outbox", "logging", "data_dir")
                if getattr(config, name) != getattr(self.config, name)
            ]
            applied = self.config.model_copy(update={
                "profiles": config.profiles, "devices": config.devices, "bacnet": config.bacnet,
                "rule_files": config.rule_files, "sla": config.sla, "rules": config.rules,
                "energy": config.energy,
            })
            try:
                # rules and meters follow the new profiles and rule files; their state is on
                # disk, so the new stages carry on where the old ones stopped
                edge = EdgeStages(applied, self.data_dir, clock=self._clock)
            except ValueError:
                await driver_set.close()
                raise
            await self._stop_devices()
            self.config = applied
            await self.edge.stop()
            self.edge = self.pipeline.rules = edge
            await self._start_edge()
            self.catalog.devices.clear()  # sinks hold this catalog: update it in place
            self.catalog.devices.update(Catalog.from_config(self.config).devices)
            self.driver_set = driver_set
            self.health = {}
            await self._start_devices(drivers)
            summary: dict[str, object] = {
                "devices": len(self.drivers),
                "added": sorted(after.keys() - before.keys()),
                "removed": sorted(before.keys() - after.keys()),
                "changed": changed,  # the device's entry or its profile
                "restart_needed": restart_needed,
            }
            from gateway.sinks.factory import config_hash
            from gateway.sinks.mqtt import MqttSink

            for runner in self.runners:  # the platform sees the new config's hash in the birth
                if isinstance(runner.sink, MqttSink):
                    await runner.sink.announce(config_hash(config))
            log.info("configuration reloaded", site=self.config.site.id, **summary)
            return summary

    async def stop(self, budget: float = STOP_BUDGET) -> None:
        """Stop polling, commit what was read, give sinks a moment to deliver, close.

        Every step has its share of one `budget`, so SIGTERM ends in time even with a hung
        device and dead peers; a step that fails is logged and the next runs all the same.
        Whatever a sink has not delivered stays in the outbox for the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget

        def until(reserve: float) -> float:
            """Seconds left for a step that must leave `reserve` for the steps after it."""
            return max(0.05, deadline - reserve - loop.time())

        if self.control is not None:  # first: no new local commands while stopping
            await _step("local control", self.control.stop(), min(0.5, until(4.0)))
        if self.commands is not None:  # before the drivers: a write in flight may finish
            await _step("commands", self.commands.close(), min(1.0, until(3.5)))
        if self._status_task is not None:
            self._status_task.cancel()
            await asyncio.gather(self._status_task, return_exceptions=True)
        await _step("devices", self._stop_devices_locked(), until(3.0))
        await _step("rules and energy", self.edge.stop(), until(2.7))
        await _step("outbox flush", self.outbox.flush(), until(2.5))
        drain = until(1.5)
        await _step("drain", asyncio.gather(*(r.drain(drain) for r in self.runners)), drain)
        for runner in self.runners:
            runner.stop()
        for task in self._sink_tasks:
            task.cancel()
        await _step("sink tasks", asyncio.gather(*self._sink_tasks, return_exceptions=True), 0.5)
        await _step(
            "sinks", asyncio.gather(*(r.sink.stop() for r in self.runners), return_exceptions=True),
            until(0.3),
        )
        await _step("outbox close", self.outbox.close(), until(0.0))
        log.info(
            "gateway stopped", site=self.config.site.id,
            undelivered=self.outbox.backlog(), dropped=self.outbox.stats.dropped_readings,
        )

    async def _stop_devices_locked(self) -> None:
        async with self._reload_lock:
            await self._stop_devices()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    def status(self) -> dict[str, object]:
        """What `gateway status` shows: devices with their request statistics, sinks, outbox."""
        stats = {d.device.id: d.stats() for d in self.drivers}
        return {
            "site": self.config.site.id,
            "ts": time.time(),
            "pid": os.getpid(),
            "devices": {
                device: {**health.snapshot(), "requests": stats.get(device, {})}
                for device, health in self.health.items()
            },
            "sinks": [r.status() for r in self.runners],
            **self.edge.status(),
            "stage_errors": self.pipeline.stage_errors,  # batches the edge stages failed on
            "outbox": {
                "committed_seq": self.outbox.stats.committed_seq,
                "dropped_readings": self.outbox.stats.dropped_readings,
                "size_bytes": self.outbox.stats.size_bytes,
            },
        }


    async def write_status_forever(self, every: float = STATUS_FILE_EVERY) -> None:
        """Keep <data_dir>/status.json current for `gateway status` (atomically replaced)."""
        path = self.data_dir / STATUS_FILE
        while True:
            try:
                text = json.dumps(self.status(), ensure_ascii=False, default=str)
                await asyncio.to_thread(_replace_file, path, text)
            except OSError as exc:
                log.warning("could not write the status file", path=str(path), error=str(exc))
            except Exception as exc:  # a bug in a view must not stop the file for good
                log.exception("could not build the status", error=repr(exc))
            await asyncio.sleep(every)


def _create_drivers(config: SiteConfig, driver_set: DriverSet) -> list[Driver]:
    """A driver for every enabled device; nothing connects until it is started."""
    return [
        driver_set.create(device, config.profiles[device.profile])
        for device in config.devices
        if device.enabled
    ]


def _replace_file(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


async def _step(what: str, awaitable, timeout: float) -> None:
    """One shutdown step, bounded in time; its failure is logged, never raised."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        log.warning("shutdown step ran out of time", step=what, seconds=round(timeout, 2))
    except Exception as exc:
        log.error("shutdown step failed", step=what, error=repr(exc))


async def _bounded(awaitable, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(awaitable, timeout)
