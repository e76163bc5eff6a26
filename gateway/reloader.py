"""The reload methods of `Gateway`: load the files again, apply what changed in place.

What changes is decided by `gateway/reload.py` (`plan_reload`) before anything running is
touched; here it is applied: new drivers and stages are built first (a configuration that
cannot run raises ReloadFailed and changes nothing), the rules and energy stages are
swapped while the devices that did not change poll on, then the changed devices restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway.catalog import Catalog
from gateway.config.errors import ConfigError
from gateway.config.models import SiteConfig
from gateway.devices import create_drivers
from gateway.edge import EdgeStages
from gateway.reload import (
    HeldBatches,
    ReloadPlan,
    applied_config,
    carry_rule_state,
    plan_reload,
)
from gateway.sinks.factory import config_hash

if TYPE_CHECKING:
    from gateway.daemon import Gateway

log = structlog.get_logger(__name__)

ANNOUNCE_TIMEOUT = 5.0  # seconds a reload waits for the upstream birth with the new hash


class ReloadFailed(ValueError):
    """A valid configuration that cannot run (a driver or a stage would not build or
    open); the previous configuration runs on. A ValueError, so a reload command is
    refused with this message."""


class Reloading:
    """The reload methods of `Gateway` (gateway/daemon.py)."""

    async def reload_from_source(self: Gateway, trigger: str = "SIGHUP") -> dict[str, object] | None:
        """Load the configuration files again and apply them; the summary, or None when
        the files are invalid or cannot run (logged with every located error, counted,
        shown by `gateway status`): the running configuration then carries on."""
        await self._started.wait()
        source = self.config.source
        if source is None:
            self._reload_failed(trigger, ["the configuration was not loaded from a file; "
                                          "there is nothing to reload"])
            return None
        try:
            config = await asyncio.to_thread(_load_site, source)
        except ConfigError as exc:
            errors = [str(issue) for issue in exc.issues] or [str(exc)]
            self._reload_failed(trigger, errors)
            return None
        except OSError as exc:
            self._reload_failed(trigger, [f"cannot read {source}: {exc.strerror or exc}"])
            return None
        try:
            return await self.reload(config, trigger=trigger)
        except ReloadFailed:
            return None  # counted and logged by reload()

    def load_config(self: Gateway, path: Path) -> SiteConfig:
        """Load the site files for a reload command (called on a worker thread): an invalid
        configuration is counted and logged like a refused SIGHUP, then raised as it was."""
        try:
            return _load_site(path)
        except ConfigError as exc:
            errors = [str(issue) for issue in exc.issues] or [str(exc)]
            assert self._loop is not None, "start() first"
            self._loop.call_soon_threadsafe(self._reload_failed, "command", errors)
            raise

    def _reload_failed(self: Gateway, trigger: str, errors: list[str]) -> None:
        self.reloads.failure(errors, time.time())
        for error in errors:
            log.error("reload refused; the running configuration carries on", trigger=trigger,
                      error=error)
        log.error("reload failed", trigger=trigger, errors=len(errors), failed=self.reloads.failed)

    async def reload(self: Gateway, config: SiteConfig, *, trigger: str = "command") -> dict[str, object]:
        """Apply a changed configuration without a restart; what changed restarts, nothing else.

        Only devices whose driver would read something different (their entry, their
        profile's points, the line they share) stop and start again; the others poll on
        without a gap. The rules and energy stages are rebuilt with their state (alarms,
        tickets, SLA clocks, counters on disk; point history in memory for devices that
        did not restart). Sinks, the outbox and the upstream link keep running; what only
        a restart applies is named in "restart_needed". Everything new is built before
        anything running stops: a configuration that cannot run raises ReloadFailed (a
        ValueError) and the old one carries on. A caller that gives up waiting (a command's
        timeout) does not cut the reload short.
        """
        task = asyncio.ensure_future(self._reload_locked(config, trigger))
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_done)
        return await asyncio.shield(task)

    def _reload_done(self: Gateway, task: asyncio.Future[dict[str, object]]) -> None:
        self._reload_tasks.discard(task)
        if not task.cancelled():
            task.exception()  # counted and logged already; the caller may have given up

    async def _reload_locked(self: Gateway, config: SiteConfig, trigger: str) -> dict[str, object]:
        async with self._reload_lock:
            try:
                summary = await self._apply(config)
            except ReloadFailed as exc:
                self._reload_failed(trigger, [str(exc)])
                raise
            except Exception as exc:  # a bug: still a failed reload, never a dead daemon
                log.exception("reload failed unexpectedly", trigger=trigger)
                self._reload_failed(trigger, [f"internal error: {exc!r}"])
                raise ReloadFailed(f"internal error: {exc!r}") from exc
            self.reloads.ok(str(summary["config_hash"]), time.time())
            log.info("configuration reloaded", trigger=trigger, site=self.config.site.id, **summary)
            return summary

    async def _apply(self: Gateway, config: SiteConfig) -> dict[str, object]:
        plan = plan_reload(self.config, config)
        applied = applied_config(self.config, config)
        new_hash = config_hash(applied)
        if not plan.live_changed:
            return {**plan.summary(len(self.drivers)), "config_hash": new_hash}
        staging = self.devices.lines.staging(plan.rebuild, applied.bacnet)
        try:
            drivers = create_drivers(applied, staging, only=plan.start)
            edge = EdgeStages(applied, self.data_dir, clock=self._clock)
        except Exception as exc:
            await staging.abort()
            raise ReloadFailed(str(exc)) from exc
        try:
            await self._swap_edge(edge, plan)
        except ReloadFailed:
            await staging.abort()
            raise
        before = self.config
        self.config = applied
        self.catalog.devices.clear()  # sinks hold this catalog: update it in place
        self.catalog.devices.update(Catalog.from_config(applied).devices)
        if self._stopping:  # stop() came while the stages swapped: start nothing new
            await staging.abort()
        else:
            gone = [device for device in plan.stop if device not in plan.start]  # removed, disabled
            await self.devices.replace(plan.stop, gone, staging, drivers, plan.unused)
        if applied.metrics != before.metrics:
            await self._stop_metrics()
            await self._start_metrics(applied)
        if applied.web != before.web:
            await self._stop_web()
            await self._start_web()
        await self._announce(new_hash)
        return {**plan.summary(len(self.drivers)), "config_hash": new_hash}

    async def _swap_edge(self: Gateway, edge: EdgeStages, plan: ReloadPlan) -> None:
        """Close the running rules and energy stages, open `edge` in their place.

        While they swap, batches of the devices that keep polling wait (stored already)
        and are evaluated by the new stages first thing. If the new stages cannot open,
        stages of the running configuration are opened again and ReloadFailed is raised.
        """
        old = self.edge
        held = HeldBatches()
        self.pipeline.rules = held
        await _quietly("closing the running rules and energy stages", old.stop())
        try:
            carry_rule_state(old.rules, edge.rules, plan.stop)
            await edge.start(self.pipeline.emit_all)
        except Exception as exc:
            log.exception("the reloaded rules and energy stages would not open; reopening "
                          "the running ones")
            await _quietly("closing the reloaded stages", edge.stop())
            try:
                self.edge = EdgeStages(self.config, self.data_dir, clock=self._clock)
                carry_rule_state(old.rules, self.edge.rules, ())
                await self.edge.start(self.pipeline.emit_all)
            except Exception:  # batches are stored all the same; each failure is counted
                log.exception("the running rules and energy stages would not open again")
            finally:
                held.release(self.pipeline, self.edge)
            raise ReloadFailed(f"the rules and energy stages would not open: {exc!r}") from exc
        self.edge = edge
        held.release(self.pipeline, edge)

    async def _announce(self: Gateway, new_hash: str) -> None:
        """The platform sees the applied configuration's hash in the gateway's birth."""
        from gateway.sinks.mqtt import MqttSink

        for runner in self.runners:
            if isinstance(runner.sink, MqttSink):
                try:
                    await asyncio.wait_for(runner.sink.announce(new_hash), ANNOUNCE_TIMEOUT)
                except TimeoutError:  # the birth carries it on the next (re)connect
                    log.warning("birth with the new configuration hash not confirmed yet",
                                sink=runner.name)


def _load_site(path: Path) -> SiteConfig:
    from gateway.config.loader import load_site

    return load_site(path)


async def _quietly(what: str, awaitable) -> None:
    """A step of a reload whose failure is logged and must not stop the reload's own
    recovery."""
    try:
        await awaitable
    except Exception as exc:
        log.error("reload step failed", step=what, error=repr(exc))
