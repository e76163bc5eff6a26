"""The daemon: wires devices, the pipeline, the outbox and the sinks; reloads its
configuration in place; reports its health; shuts down in order."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from drivers.base import Driver
from gateway import __version__
from gateway.batch import Event
from gateway.catalog import Catalog
from gateway.commands import CommandHandler, LocalControl, build_commands
from gateway.commands.local import socket_path
from gateway.config.models import SiteConfig
from gateway.devices import Devices
from gateway.devices import create_drivers as _create_drivers  # a seam: benchmarks feed batches
from gateway.edge import EdgeStages
from gateway.energy.stage import EnergyStage
from gateway.health import DeviceHealth, SinkWatch, SiteFacts, judge
from gateway.outbox import Outbox
from gateway.pipeline import Pipeline
from gateway.reload import ReloadRecord
from gateway.reloader import Reloading
from gateway.sinks.factory import build_sinks, config_hash
from gateway.sinks.runner import SinkRunner
from rules.engine.engine import RuleEngine
from rules.engine.events import MAINTENANCE

if TYPE_CHECKING:
    from gateway.metrics import MetricsServer
    from gateway.web import StatusPage

log = structlog.get_logger(__name__)

STATUS_FILE = "status.json"
STATUS_FILE_EVERY = 5.0  # seconds
STOP_BUDGET = 4.5  # seconds for the whole shutdown: SIGTERM must end within 5 s


class Gateway(Reloading):
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
        # through `self.edge`, which a reload replaces: the ledger of the stages running now
        self.pipeline.listeners.append(lambda event: self.edge.equipment.observe(event))
        self.devices = Devices(self.pipeline, config.bacnet,
                               lambda device: self.rules.maintenance_modes().get(device))
        self.runners: list[SinkRunner] = []
        self.reloads = ReloadRecord()
        self.sink_watch = SinkWatch(self.outbox, self.runners)  # the sinks' lag and outages
        self.metrics: MetricsServer | None = None
        self.web: StatusPage | None = None  # the local status page (web: in site.yaml)
        self._sink_tasks: list[asyncio.Task[None]] = []
        self._status_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Future[dict[str, object]]] = set()
        self._started = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.commands: CommandHandler | None = None
        self.control: LocalControl | None = None

    # what commands and views read of the devices
    @property
    def drivers(self) -> list[Driver]:
        return self.devices.drivers

    @property
    def health(self) -> dict[str, DeviceHealth]:
        return self.devices.health

    @property
    def _poll_tasks(self) -> list[asyncio.Task[None]]:
        return self.devices.tasks

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.outbox.open()
        await self._start_edge()
        for sink, linger in build_sinks(self.config, self.catalog, self.data_dir):
            runner = SinkRunner(sink, self.outbox, linger=linger)
            self.runners.append(runner)
            self._sink_tasks.append(asyncio.create_task(runner.run(), name=f"sink:{sink.name}"))
        await self.devices.start(_create_drivers(self.config, self.devices.lines))
        self.reloads.config_hash, self.reloads.applied_at = config_hash(self.config), time.time()
        await self.sink_watch.start()
        self._watch_task = asyncio.create_task(self.sink_watch.watch_forever(), name="watch")
        self._status_task = asyncio.create_task(self.write_status_forever(), name="status")
        await self._start_metrics(self.config)
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
        await self._start_web()  # after the handler: the page acknowledges through it
        self._started.set()
        log.info(
            "gateway started",
            version=__version__, site=self.config.site.id, devices=len(self.drivers),
            sinks=[r.name for r in self.runners], data_dir=str(self.data_dir),
            commands_upstream=self.commands.connection is not None,
            config_hash=self.reloads.config_hash,
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

    # --- metrics ---------------------------------------------------------------------

    async def _start_metrics(self, config: SiteConfig) -> None:
        if config.metrics is None:
            return
        from gateway.metrics import MetricsServer, build_registry

        host, port = config.metrics.address
        server = MetricsServer(build_registry(self), host, port)
        try:
            await server.start()
        except OSError as exc:  # a port in use must not keep the gateway from running
            log.error("metrics endpoint cannot listen; running without it",
                      listen=config.metrics.listen, error=exc.strerror or str(exc))
            return
        self.metrics = server

    async def _start_web(self) -> None:
        if self.config.web is None:
            return
        from gateway.web import start_status_page  # aiohttp's server only when configured

        self.web = await start_status_page(self)

    async def _stop_web(self) -> None:
        page, self.web = self.web, None
        if page is not None:
            await page.stop()

    async def _stop_metrics(self) -> None:
        server, self.metrics = self.metrics, None
        if server is not None:
            await server.stop()

    # --- stop ----------------------------------------------------------------------

    async def stop(self, budget: float = STOP_BUDGET) -> None:
        """Stop polling, commit what was read, give sinks a moment to deliver, close.

        Every step has its share of one `budget`, so SIGTERM ends in time even with a hung
        device and dead peers; a step that fails is logged and the next runs all the same.
        Whatever a sink has not delivered stays in the outbox for the next start.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget

        def until(reserve: float) -> float:
            """Seconds left for a step that must leave `reserve` for the steps after it."""
            return max(0.05, deadline - reserve - loop.time())

        if self.web is not None:  # first: no new acknowledgements from the page
            await _step("status page", self._stop_web(), min(0.3, until(4.2)))
        if self.control is not None:  # then no new local commands
            await _step("local control", self.control.stop(), min(0.5, until(4.0)))
        if self.commands is not None:  # before the drivers: a write in flight may finish
            await _step("commands", self.commands.close(), min(1.0, until(3.5)))
        for task in (self._status_task, self._watch_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await _step("metrics", self._stop_metrics(), min(0.3, until(3.2)))
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
            await self.devices.stop_all()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # --- status and health -----------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What `gateway status` shows: health, devices with their request statistics,
        sinks, outbox, reloads."""
        now = time.time()
        sinks = self.sinks_view(now)
        disk = self.disk_usage()
        return {
            "site": self.config.site.id,
            "ts": now,
            "pid": os.getpid(),
            "health": self.health_view(now, sinks),
            "devices": self.devices.status(),
            "sinks": sinks,
            **self.edge.status(),
            "stage_errors": self.pipeline.stage_errors,  # batches the edge stages failed on
            "outbox": {
                "committed_seq": self.outbox.stats.committed_seq,
                "dropped_readings": self.outbox.stats.dropped_readings,
                "size_bytes": self.outbox.stats.size_bytes,
                "max_size": self.outbox.max_size,
            },
            "disk": None if disk is None else {"total_bytes": disk[0], "free_bytes": disk[1]},
            "reload": self.reloads.snapshot(),
            "metrics": self.metrics.where if self.metrics is not None else None,
            "web": self.web.stats() if self.web is not None else None,
        }

    def sinks_view(self, now: float) -> list[dict[str, object]]:
        """Each sink's runner status with its lag and how long it has been failing."""
        return self.sink_watch.sinks(now)

    def health_view(self, now: float | None = None,
                    sinks: list[dict[str, object]] | None = None) -> dict[str, object]:
        """OK, or DEGRADED with the reasons (gateway/health.py `judge`)."""
        now = time.time() if now is None else now
        maintenance = self.rules.maintenance_modes()
        facts = SiteFacts(
            offline=sorted(d for d, h in self.health.items()
                           if h.online is False and d not in maintenance),
            reload_failed_at=self.reloads.failed_at,
        )
        for sink in self.sinks_view(now) if sinks is None else sinks:
            facts.add_sink(sink)
        disk = self.disk_usage()
        if disk is not None and disk[0] > 0:
            facts.disk_free = disk[1] / disk[0]
        if self.outbox.max_size:
            facts.outbox_fill = self.outbox.stats.size_bytes / self.outbox.max_size
        return judge(facts)

    def disk_usage(self) -> tuple[int, int] | None:
        """(total, free) bytes of the data dir's file system; None when it cannot be read."""
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return None
        return usage.total, usage.free

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
