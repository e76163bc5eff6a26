"""Polls one device on its own fixed-rate timer, so a slow or dead device delays only itself."""

from __future__ import annotations

import asyncio
import time

import structlog

from drivers.base import Driver, DriverError
from gateway.batch import Batch, Quality
from gateway.health import DeviceHealth
from gateway.pipeline import Pipeline

log = structlog.get_logger(__name__)


async def poll_forever(
    driver: Driver, interval: float, pipeline: Pipeline, health: DeviceHealth, timeout: float
) -> None:
    """Read the device every `interval` seconds and emit one batch per poll.

    A failed poll emits a batch whose every point carries the failure as its quality,
    never the last value again. Ticks missed while a read overran are skipped, keeping
    the schedule's phase instead of bursting to catch up.
    """
    loop = asyncio.get_running_loop()
    device = driver.device.id
    next_tick = loop.time()
    while True:
        started = loop.time()
        event = None
        try:
            batch = await asyncio.wait_for(driver.read(), timeout)
        except (DriverError, TimeoutError, OSError) as exc:
            quality = getattr(exc, "quality", Quality.COMM_FAILURE)
            error = str(exc) or type(exc).__name__
            if health.consecutive_failures == 0:
                log.warning("poll failed", device=device, quality=quality, error=error)
            batch = Batch.failed(device, time.time(), driver.points, quality)
            event = health.failed(quality, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a driver bug must not stop this device's polling
            if health.consecutive_failures == 0:
                log.exception("poll raised unexpectedly", device=device)
            batch = Batch.failed(device, time.time(), driver.points, Quality.COMM_FAILURE)
            event = health.failed("internal_error", repr(exc))
        else:
            event = health.good(loop.time() - started)
        pipeline.emit_batch(batch)
        if event is not None:
            pipeline.emit_event(event)
            log.info(
                "device online" if health.online else "device offline",
                device=device, error=None if health.online else health.last_error,
            )
        next_tick += interval
        now = loop.time()
        if next_tick <= now:
            next_tick += ((now - next_tick) // interval + 1) * interval
        await asyncio.sleep(next_tick - now)
