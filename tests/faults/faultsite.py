"""What the fault tests share: a small site on disk, the gateway in process with a tap on
everything it puts in its outbox, and waiting without sleeping blindly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gateway.batch import Batch, Event
from gateway.config.loader import load_site
from gateway.daemon import Gateway
from gateway.equipment.status_points import ALARM_POINTS, DEVICE_POINTS

if TYPE_CHECKING:
    from upstream_tools import Recorder

# Three holding registers, one request per poll: 0.452 MPa, -5.2 °C, a count.
REGISTERS = [452, 0xFFCC, 7]
PROFILE = {
    "id": "fault_pump",
    "name": "故障测试水泵 fault-test pump",
    "system": "water_supply",
    "points": {
        "pressure": {"table": "holding", "address": 0, "type": "uint16", "scale": 0.001,
                     "unit": "MPa", "name": "出水压力"},
        "temperature": {"table": "holding", "address": 1, "type": "int16", "scale": 0.1,
                        "unit": "°C"},
        "count": {"table": "holding", "address": 2, "type": "uint16"},
    },
}
WAIT = 20.0  # a guard against hanging, never a measurement


def modbus_tcp(port: int, *, unit: int = 1, timeout: str = "300ms") -> dict[str, Any]:
    return {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "unit": unit,
            "timeout": timeout}


def device(device_id: str, connection: dict[str, Any], *, poll: str = "200ms",
           profile: str = "fault_pump", **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "profile": profile, "connection": connection,
            "poll_interval": poll, "location": {"building": "1号楼", "room": "水泵房"}, **extra}


def write_site(root: Path, *, site_id: str, devices: list[dict[str, Any]],
               sinks: list[dict[str, Any]] | None = None, upstream: dict[str, Any] | None = None,
               profiles: dict[str, dict[str, Any]] | None = None, rules: dict | None = None,
               flush_interval: str = "100ms", max_size: str | None = None) -> Path:
    """site.yaml, its profiles and devices under `root`; returns site.yaml's path."""
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    for profile in (profiles or {"fault_pump": PROFILE}).values():
        (root / "profiles" / f"{profile['id']}.yaml").write_text(
            yaml.safe_dump(profile, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (root / "devices" / "devices.yaml").write_text(
        yaml.safe_dump({"devices": devices}, allow_unicode=True, sort_keys=False),
        encoding="utf-8")
    outbox: dict[str, Any] = {"flush_interval": flush_interval, "fsync": "normal"}
    if max_size is not None:
        outbox["max_size"] = max_size
    site: dict[str, Any] = {
        "site": {"id": site_id, "name": "故障测试小区 fault-test estate"},
        "data_dir": "data",
        "outbox": outbox,
        "logging": {"level": "info", "format": "json"},
        "sinks": sinks or [],
    }
    if upstream is not None:
        site["upstream"] = upstream
    if rules is not None:
        site["rules"] = rules
    path = root / "site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


_STATUS = frozenset({*ALARM_POINTS, *DEVICE_POINTS})  # the gateway's own, not polls


@dataclass
class Tap:
    """Everything the gateway put in its outbox, in order: what was produced."""

    batches: list[Batch] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def of(self, device_id: str) -> list[Batch]:
        """The device's polls; the gateway's own status readings (docs/equipment.md) left out."""
        return [b for b in list(self.batches) if b.device == device_id and _STATUS.isdisjoint(b.points)]

    def good(self, device_id: str) -> list[Batch]:
        return [b for b in self.of(device_id) if b.quality is None]

    def failed(self, device_id: str) -> list[Batch]:
        return [b for b in self.of(device_id) if b.quality is not None]


def tap_outbox(gateway: Gateway) -> Tap:
    """Record every batch and event appended to the gateway's outbox from now on."""
    tap = Tap()
    outbox = gateway.outbox
    append_batch, append_event = outbox.append_batch, outbox.append_event

    def batch(item: Batch) -> None:
        append_batch(item)  # first: a refused append (closed outbox) is not produced
        tap.batches.append(item)

    def event(item: Event) -> None:
        append_event(item)
        tap.events.append(item)

    outbox.append_batch = batch  # type: ignore[method-assign]
    outbox.append_event = event  # type: ignore[method-assign]
    return tap


@asynccontextmanager
async def running_gateway(site: Path, *, data_dir: Path | None = None,
                          clock: Callable[[], float] = time.time,
                          ) -> AsyncIterator[tuple[Gateway, Tap]]:
    """The daemon in this process (its loop is the test's), with a tap on its outbox."""
    config = load_site(site)
    gateway = Gateway(config, data_dir=data_dir or site.parent / "data", clock=clock)
    tap = tap_outbox(gateway)
    await gateway.start()
    try:
        yield gateway, tap
    finally:
        await bounded(gateway.stop(budget=2.0), "the gateway to stop")


STOP_WITHIN = 15.0  # seconds: SIGTERM's budget is 5 s; this only turns a hang into a failure


async def bounded(awaitable: Any, what: str, timeout: float = STOP_WITHIN) -> None:
    """Await `awaitable`, failing (with every task's stack) if it takes longer than `timeout`.

    Not wait_for: cancelling a step that swallows the cancellation would hang here too.
    """
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        task.result()
        return
    stacks = []
    for pending in asyncio.all_tasks():
        frames = pending.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno}"
                            for f in reversed(frames))
        stacks.append(f"{pending.get_name()}: {where}")
    raise AssertionError(f"{what} took over {timeout:g} s; tasks:\n" + "\n".join(stacks))


async def until(predicate: Callable[[], Any], what: str, timeout: float = WAIT,
                every: float = 0.05) -> Any:
    """Wait on the event loop until `predicate()` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


async def stop_polling(gateway: Gateway) -> None:
    """Stop every device's polls (the daemon's own first stop step), so that what was
    produced stops growing and a test can wait for all of it to be delivered."""
    await bounded(gateway._stop_devices_locked(), "polling to stop")  # noqa: SLF001


def upstream_ids(recorder: Recorder) -> list[str]:
    """The ids of the records the platform received, duplicates kept (the gateway's own
    /gateway/ topics left out)."""
    return [m.body["id"] for m in list(recorder.messages) if m.payload and "/gateway/" not in m.topic]


def delivered(gateway: Gateway, sink: str) -> bool:
    """The sink confirmed everything committed so far (and nothing waits to be committed)."""
    runner = next(r for r in gateway.runners if r.name == sink)
    outbox = gateway.outbox
    return (not outbox._pending  # noqa: SLF001 - appended, not yet committed
            and runner.status()["cursor"] >= outbox.stats.committed_seq
            and runner.last_error is None)
