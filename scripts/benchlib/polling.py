"""One measured polling run: simulated Modbus devices → a gateway process (ours or
ThingsBoard's) → Mosquitto → the benchmark's subscriber.

The run waits until every device has delivered a reading, lets it settle, then measures a
window of `duration` seconds: readings are counted by their read time (`ts`) within the
window, once they arrived (a grace period after the window lets the last ones in).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import tb
from benchlib.figures import cpu_seconds, mib, summary
from benchlib.gwproc import GatewayProc
from benchlib.modbus_server import value
from benchlib.servers import ServerPool
from benchlib.site import GATEWAY_ID, SITE_ID, Upstream, device_index, write_site
from benchlib.subscriber import Subscriber

KINDS = {
    "ours": "this gateway",
    "tb-keys": "ThingsBoard, one key per register",
    "tb-wide": "ThingsBoard, wide range",
}


def expected_value(overrides: dict[tuple[int, int], int] | None = None):
    def expected(device: str, key: str) -> int | None:
        if not key.startswith("r"):
            return None
        try:
            d, r = device_index(device), int(key[1:])
        except ValueError:
            return None
        if overrides and (d, r) in overrides:
            return overrides[(d, r)]
        return value(d, r)
    return expected


@dataclass
class Workload:
    devices: int
    registers: int
    interval: float  # seconds


def _proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return cpu_seconds(pid)
    except FileNotFoundError:
        return 0.0


def measure(kind: str, work: Workload, pool: ServerPool, broker, workdir: Path, *,
            duration: float, settle: float = 3.0, start_timeout: float = 90.0,
            flush_interval: str = "200ms") -> dict:
    """Run one gateway of `kind` on the pool's devices and return its figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    dialect = "ours" if kind == "ours" else "tb"
    topics = (f"pm/{SITE_ID}/{GATEWAY_ID}/telemetry/+",) if dialect == "ours" else ("v1/gateway/#",)
    sub = Subscriber("127.0.0.1", broker.port, dialect=dialect, topics=topics,
                     expected=expected_value(), client_id=f"bench-sub-{kind}-{time.time_ns()}",
                     keep_other=False).start()
    if kind == "ours":
        site = write_site(workdir / "site", ports=pool.ports, registers=work.registers,
                          poll_interval=f"{int(work.interval * 1000)}ms",
                          upstream=Upstream("127.0.0.1", broker.port), flush_interval=flush_interval)
        proc = GatewayProc(site, workdir / "data", log=workdir / "gateway.log").start()
    else:
        conf = tb.write_config(workdir / "tb-config", broker.port, pool.ports, work.registers,
                               int(work.interval * 1000), wide=(kind == "tb-wide"))
        proc = tb.TbProc(conf, workdir / "tb-run").start()
    started = time.time()
    try:
        # every device delivered once
        first_all = None
        while time.time() - started < start_timeout:
            if not proc.alive():
                raise RuntimeError(f"{KINDS[kind]} exited:\n{proc.log_tail()}")
            if len({r.device for r in list(sub.readings)}) >= work.devices:
                first_all = time.time() - started
                break
            time.sleep(0.2)
        if first_all is None:
            seen = len({r.device for r in list(sub.readings)})
            raise RuntimeError(f"{KINDS[kind]}: only {seen} of {work.devices} devices delivered "
                               f"within {start_timeout:.0f}s:\n{proc.log_tail()}")
        time.sleep(settle)
        pool.reset()
        broker_pid = broker.process.pid if broker.process else None
        t0, c0 = proc.sampler.mark()
        s0, b0 = pool.cpu(), _proc_cpu(broker_pid)
        time.sleep(duration)
        t1, c1 = proc.sampler.mark()
        s1, b1 = pool.cpu(), _proc_cpu(broker_pid)
        stats = pool.stats()
        time.sleep(max(1.0, work.interval) + 1.0)  # the last readings of the window arrive
        hwm = proc.sampler.hwm_kib
        rss_now = proc.sampler.samples[-1][2] if proc.sampler.samples else None
    finally:
        proc.stop()
        sub.stop()
    window = [r for r in list(sub.readings) if t0 <= r.ts < t1]
    wall = t1 - t0
    cpu = c1 - c0
    polls = {(r.device, r.ts) for r in window}
    points = sum(r.points for r in window)
    bad = sum(r.bad for r in window)
    requests = stats["requests"]
    polls_served = stats["polls"]
    latency = [r.arrival - r.ts for r in window]
    jitter = []
    for _device, rs in sub.per_device(window).items():
        stamps = sorted({r.ts for r in rs})
        jitter += [abs((b - a) - work.interval) for a, b in zip(stamps, stamps[1:], strict=False)]
    offered = work.devices * work.registers / work.interval
    return {
        "kind": kind,
        "outbox_flush_interval": flush_interval if kind == "ours" else None,
        "what": KINDS[kind],
        "devices_delivering_after_s": round(first_all, 1),
        "window_s": round(wall, 1),
        "points": points,
        "points_per_s": round(points / wall, 1),
        "points_offered_per_s": round(offered, 1),
        "polls_delivered": len(polls),  # distinct (device, ts) at the subscriber
        "polls_served": polls_served,  # reads from address 0 at the servers
        "polls_scheduled": round(work.devices * wall / work.interval),
        "points_per_poll_delivered": round(points / len(polls), 1) if polls else None,
        "values_wrong": bad,
        "wrong_examples": sub.bad_examples[:5],
        "requests": requests,
        "requests_per_poll": stats["requests_per_poll"],
        "requests_per_poll_minimum": -(-work.registers // 125),
        "cpu_s": round(cpu, 2),
        "cpu_percent_of_core": round(cpu / wall * 100, 1),
        "points_per_cpu_s": round(points / cpu) if cpu > 0 else None,
        "cpu_s_per_100k_points": round(cpu / points * 100_000, 2) if points else None,
        "peak_rss_mib": mib(hwm),
        "rss_end_mib": mib(rss_now),
        "latency_ms": summary(latency, 1000),
        "jitter_ms": summary(jitter, 1000),
        "servers_cpu_percent": round((s1 - s0) / wall * 100, 1),
        "broker_cpu_percent": round((b1 - b0) / wall * 100, 1),
        "duplicates": sub.duplicates,
        "rpc_answered": sub.rpc_answered,
    }
