"""Polls each (device, poll group) on its own fixed-rate timer, backing off a dead device.

A slow group never holds up a fast one, and a slow or dead device delays only itself:
once it is offline its polls space out exponentially (doubling up to a minute), so on a
shared bus it costs its neighbours at most one timeout per backoff period. A device with
several poll groups probes with its first group only while offline; the others report
comm_failure on their own schedule without touching the bus until the probe succeeds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from drivers.base import Driver, DriverError
from gateway.batch import Batch, Quality
from gateway.health import DeviceHealth
from gateway.pipeline import Pipeline

log = structlog.get_logger(__name__)

MAX_BACKOFF = 60.0  # seconds: the longest an offline device goes unprobed
STATUS_EVERY = 60.0  # seconds between periodic device_status events
READ_GUARD = 30.0  # a read that takes longer than this (or 2 intervals) is a driver bug


@dataclass(frozen=True, slots=True)
class PollSpec:
    """One timer: a device's poll group, its interval and the points its batches hold."""

    group: str
    interval: float
    points: tuple[str, ...]


def poll_specs(driver: Driver) -> list[PollSpec]:
    """The timers a driver needs: one per poll group it exposes, or one for the device.

    Each driver exposes `poll_groups` (name -> interval and points) and takes the group
    in `read(group)`; a driver without groups has one, every point at `poll_interval`.
    """
    return [PollSpec(name, g.interval, tuple(g.points)) for name, g in driver.poll_groups.items()]


def backoff_interval(interval: float, failures_while_offline: int) -> float:
    """The wait before the next poll: the interval, doubled per failure while offline,
    at most MAX_BACKOFF (never less than the interval itself)."""
    if failures_while_offline <= 0:
        return interval
    return max(interval, min(interval * 2**failures_while_offline, MAX_BACKOFF))


async def poll_forever(
    driver: Driver,
    pipeline: Pipeline,
    health: DeviceHealth,
    spec: PollSpec | None = None,
    *,
    probe: bool = True,
    guard: float | None = None,
) -> None:
    """Read one poll group every `spec.interval` seconds and emit one batch per poll.

    A failed poll emits a batch whose every point carries the failure as its quality,
    never the last value again. Ticks missed while a read overran are skipped, keeping
    the schedule's phase instead of bursting to catch up. With `probe` False this group
    does not read while the device is offline (another group probes it).
    """
    spec = spec or poll_specs(driver)[0]
    guard = guard or max(2 * spec.interval, READ_GUARD)
    loop = asyncio.get_running_loop()
    device = driver.device.id
    next_tick = loop.time()
    while True:
        started = loop.time()
        event = None
        try:
            if not probe and health.online is False:
                # the probe group finds out when it is back; this poll is a failure too
                batch = Batch.failed(device, time.time(), spec.points, Quality.COMM_FAILURE)
            else:
                async with asyncio.timeout(guard):  # no task per poll, unlike wait_for
                    batch = await driver.read(spec.group)
                event = health.good(loop.time() - started)
        except (DriverError, TimeoutError, OSError) as exc:
            quality = getattr(exc, "quality", Quality.COMM_FAILURE)
            error = str(exc) or type(exc).__name__
            if health.consecutive_failures == 0:
                log.warning("poll failed", device=device, group=spec.group, quality=quality, error=error)
            batch = Batch.failed(device, time.time(), spec.points, quality)
            event = health.failed(quality, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a driver bug must not stop this device's polling
            if health.consecutive_failures == 0:
                log.exception("poll raised unexpectedly", device=device, group=spec.group)
            batch = Batch.failed(device, time.time(), spec.points, Quality.COMM_FAILURE)
            event = health.failed("internal_error", repr(exc))
        pipeline.emit_batch(batch)
        if event is not None:
            pipeline.emit_event(event)
            log.info(
                "device online" if health.online else "device offline",
                device=device, error=None if health.online else health.last_error,
            )
        interval = backoff_interval(spec.interval, health.failures_while_offline)
        next_tick += interval
        now = loop.time()
        if next_tick <= now:
            next_tick += ((now - next_tick) // interval + 1) * interval
        await asyncio.sleep(next_tick - now)


WATCH_EVERY = 5.0  # seconds: the longest between two looks at a push device's last message


async def watch_forever(
    driver: Driver, pipeline: Pipeline, health: DeviceHealth, silence: float
) -> None:
    """Keep a push device's status (MQTT): offline after `silence` seconds without a
    message, online again at its next one.

    Looks at `driver.last_seen` (epoch seconds of its last message, None before the
    first) every min(silence / 4, WATCH_EVERY) seconds. Going offline emits a status event
    and one batch with comm_failure for every point, marking the gap once; the device's
    own messages are its only batches otherwise, so no stale value is ever repeated.
    """
    # silence already is the evidence a device is gone: one failed look takes it offline
    health.offline_after = 1
    every = min(silence / 4, WATCH_EVERY)
    device = driver.device.id
    seen: float | None = None  # last_seen at the previous look
    started = time.time()
    while True:
        now = time.time()
        last = getattr(driver, "last_seen", None)
        event = None
        if last is not None and last != seen:
            seen = last
            event = health.good(0.0, now=last)
        elif now - (last if last is not None else started) >= silence and health.online is not False:
            error = f"no message for {silence:g} s"
            pipeline.emit_batch(Batch.failed(device, now, driver.points, Quality.COMM_FAILURE))
            event = health.failed(Quality.COMM_FAILURE, error, now=now)
        if event is not None:
            pipeline.emit_event(event)
            log.info(
                "device online" if health.online else "device offline",
                device=device, error=None if health.online else health.last_error,
            )
        await asyncio.sleep(every)


async def report_status_forever(
    driver: Driver, pipeline: Pipeline, health: DeviceHealth, every: float = STATUS_EVERY
) -> None:
    """Emit a device_status event every `every` seconds: poll health plus driver stats."""
    while True:
        await asyncio.sleep(every)
        stats = driver.stats()
        pipeline.emit_event(health.status_event(**({"requests": stats} if stats else {})))
