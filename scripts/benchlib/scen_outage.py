"""Scenario `outage`: Mosquitto and the InfluxDB server (VictoriaMetrics) down for a while at a
steady ingest rate, then back: time to drain, order per device, alarms first, zero loss, and
the gateway's RSS during the outage (the backlog is on disk, not in memory)."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchlib.figures import mib, rss_trend
from benchlib.gwproc import GatewayProc
from benchlib.polling import expected_value
from benchlib.report import table
from benchlib.servers import ServerPool
from benchlib.site import GATEWAY_ID, SITE_ID, Upstream, influx_v2_sink, write_site
from benchlib.subscriber import Subscriber

LOW, HIGH = 50, 150


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--registers", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--outage", type=float, default=None, help="seconds down (default 120)")
    parser.add_argument("--alarms", type=int, default=5, help="devices raising an alarm while down")
    parser.add_argument("--runs", type=int, default=2)


def _seq_of(payload) -> int | None:
    return payload.get("seq") if isinstance(payload, dict) else None


def one_run(args: argparse.Namespace, outage: float, root: Path) -> dict:
    import services

    steady = 5.0 if args.quick else 15.0
    broker = services.start_mosquitto(root / "mosquitto", persistence=True)
    vm = services.start_victoria(root / "victoria")
    pool = ServerPool(args.devices, args.registers).start()
    prefix = f"pm/{SITE_ID}/{GATEWAY_ID}"
    overrides = {(d, 0): LOW for d in range(args.devices)}
    try:
        for d in range(args.devices):
            pool.set(d, 0, LOW)
        site = write_site(root / "site", ports=pool.ports, registers=args.registers,
                          poll_interval=f"{int(args.interval * 1000)}ms",
                          upstream=Upstream("127.0.0.1", broker.port, keepalive="5s"),
                          sinks_yaml=influx_v2_sink(vm.url), alarm_over=100)
        sub = Subscriber("127.0.0.1", broker.port, topics=(f"{prefix}/#",), persistent=True,
                         expected=expected_value(overrides),
                         client_id=f"bench-outage-{time.time_ns()}").start()
        gw = GatewayProc(site, root / "data", log=root / "gateway.log", sample_every=0.25).start()
        try:
            deadline = time.time() + 60
            while len({r.device for r in list(sub.readings)}) < args.devices:
                if time.time() > deadline or not gw.alive():
                    raise RuntimeError("not every device delivered:\n" + gw.log_tail())
                time.sleep(0.2)
            time.sleep(steady)
            t_down = time.time()
            broker.stop()
            vm.stop()
            alarm_at = t_down + outage / 3
            raised = False
            while time.time() < t_down + outage:
                if not raised and time.time() >= alarm_at:
                    for d in range(min(args.alarms, args.devices)):
                        pool.set(d, 0, HIGH)
                        overrides[(d, 0)] = HIGH
                    raised = True
                time.sleep(0.1)
            before_back = gw.outbox_state() or {}
            t_back = time.time()
            broker.start()
            vm.start()
            committed_at_back = before_back.get("committed", 0)
            drained_at = None
            while time.time() < t_back + 600:
                st = gw.outbox_state()
                if st and min(v for k, v in st.items() if k in ("cursor:upstream", "cursor:influx")) \
                        >= committed_at_back:
                    drained_at = time.time()
                    break
                time.sleep(0.1)
            time.sleep(steady)
            t_end = time.time()
        finally:
            gw.stop()
            time.sleep(1.0)
            sub.stop()
    finally:
        pool.stop()
    try:
        vm_samples = _vm_samples(vm)
    finally:
        vm.stop()
        broker.stop()

    # --- loss: every record of the outbox carries a seq; upstream gets them all ---------
    seqs: set[int] = {r.seq for r in sub.readings if r.seq is not None}
    seqs |= {s for m in sub.others if (s := _seq_of(m.payload)) is not None}
    gaps = []
    if seqs:
        lo, hi = min(seqs), max(seqs)
        gaps = sorted(set(range(lo, hi + 1)) - seqs)
    telemetry_points = sum(r.points for r in sub.readings)
    # --- order per device ---------------------------------------------------------------
    out_of_order = 0
    per_device: dict[str, list] = defaultdict(list)
    for r in sub.readings:  # arrival order, duplicates already dropped by id
        per_device[r.device].append(r)
    for rs in per_device.values():
        out_of_order += sum(1 for a, b in zip(rs, rs[1:], strict=False) if b.ts <= a.ts or (b.seq or 0) <= (a.seq or 0))
    # --- alarms first ------------------------------------------------------------------
    from datetime import datetime

    def ts_of(m) -> float | None:
        p = m.payload
        if not isinstance(p, dict) or "ts" not in p:
            return None
        return datetime.fromisoformat(p["ts"]).timestamp()

    alarm_msgs = [m for m in sub.others
                  if ("/alarms/" in m.topic or m.topic.endswith("/events/alarm_event"))
                  and (t := ts_of(m)) is not None and t_down <= t < t_back]
    backlog_tel = [r for r in sub.readings if t_down <= r.ts < t_back]
    last_alarm = max((m.arrival for m in alarm_msgs), default=None)
    after = [r.arrival for r in sub.readings if r.arrival >= t_back] + \
            [m.arrival for m in sub.others if m.arrival >= t_back]
    first_after = min(after, default=None)
    first_backlog = min((r.arrival for r in backlog_tel), default=None)
    rss = rss_trend(gw.sampler.rss_between(t_down, t_back))
    rss_before = rss_trend(gw.sampler.rss_between(t_down - steady, t_down))
    return {
        "outage_s": round(t_back - t_down, 1),
        "ingest_points_per_s": args.devices * args.registers / args.interval,
        "backlog_records_at_restart": committed_at_back - min(
            v for k, v in before_back.items() if k.startswith("cursor:") and "|" not in k)
        if before_back else None,
        "drain_s": None if drained_at is None else round(drained_at - t_back, 2),
        "first_message_after_restart_s": None if first_after is None else round(first_after - t_back, 2),
        "drain_after_first_message_s": (None if drained_at is None or first_after is None
                                        else round(drained_at - first_after, 2)),
        "telemetry_messages": len(sub.readings),
        "telemetry_points": telemetry_points,
        "values_wrong": sum(r.bad for r in sub.readings),
        "duplicates_dropped": sub.duplicates,
        "seq_range": [min(seqs), max(seqs)] if seqs else None,
        "seq_gaps": len(gaps),
        "seq_gap_examples": gaps[:10],
        "victoria_samples": vm_samples,
        "out_of_order_per_device": out_of_order,
        "outage_alarm_messages": len(alarm_msgs),
        "outage_telemetry_messages": len(backlog_tel),
        "alarms_first": (last_alarm is not None and first_backlog is not None
                         and last_alarm <= first_backlog),
        "last_outage_alarm_after_restart_s": None if last_alarm is None else round(last_alarm - t_back, 3),
        "first_backlog_telemetry_after_restart_s": None if first_backlog is None else round(first_backlog - t_back, 3),
        "rss_before_outage": rss_before,
        "rss_during_outage": rss,
        "rss_every_5s_mib": _every(gw.sampler.rss_between(t_down - steady, t_end), 5.0, t_down),
        "peak_rss_mib": mib(gw.sampler.hwm_kib),
        "run_s": round(t_end - t_down, 1),
    }


def _every(samples: list[tuple[float, int]], step: float, origin: float) -> list[tuple[float, float]]:
    """(seconds since `origin`, MiB) about every `step` seconds: the RSS curve, small enough
    for the JSON."""
    out: list[tuple[float, float]] = []
    for t, kib in samples:
        if not out or t - origin >= out[-1][0] + step:
            out.append((round(t - origin, 1), round(kib / 1024, 1)))
    return out


def _vm_samples(vm) -> int | None:
    import services

    try:
        series = services.victoria_export(vm, '{__name__=~".+"}')
    except Exception:  # noqa: BLE001 - a figure we can do without
        return None
    return sum(len(s.get("values", [])) for s in series)


ROWS = [
    ("outage s", "outage_s"), ("ingest points/s", "ingest_points_per_s"),
    ("backlog records at restart", "backlog_records_at_restart"), ("time to drain s", "drain_s"),
    ("  first message after restart s", "first_message_after_restart_s"),
    ("  drain after the first message s", "drain_after_first_message_s"),
    ("telemetry points at subscriber", "telemetry_points"),
    ("samples in VictoriaMetrics", "victoria_samples"),
    ("values wrong", "values_wrong"), ("seq gaps (lost records)", "seq_gaps"),
    ("duplicates dropped by id", "duplicates_dropped"),
    ("out of order per device", "out_of_order_per_device"),
    ("alarm messages from the outage", "outage_alarm_messages"),
    ("alarms first", "alarms_first"),
    ("last outage alarm after restart s", "last_outage_alarm_after_restart_s"),
    ("first backlog telemetry after restart s", "first_backlog_telemetry_after_restart_s"),
    ("RSS before outage MiB", ("rss_before_outage", "last_mib")),
    ("RSS during outage min MiB", ("rss_during_outage", "min_mib")),
    ("RSS during outage max MiB", ("rss_during_outage", "max_mib")),
    ("RSS slope during outage MiB/min", ("rss_during_outage", "slope_mib_per_min")),
    ("peak RSS MiB", "peak_rss_mib"),
]


def run(args: argparse.Namespace) -> dict:
    outage = args.outage or (20.0 if args.quick else 120.0)
    runs_n = 1 if args.quick else args.runs
    runs = []
    for n in range(runs_n):
        print(f"run {n + 1}/{runs_n}: {args.devices} devices × {args.registers} registers every "
              f"{args.interval:g}s, Mosquitto and VictoriaMetrics down {outage:g}s", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
            runs.append(one_run(args, outage, Path(tmp)))
    print("\n== outage: broker and InfluxDB server down, then back")
    print(table(["figure", *(f"run {i + 1}" for i in range(len(runs)))],
                [[label, *((r[k[0]][k[1]] if isinstance(k, tuple) else r[k]) for r in runs)]
                 for label, k in ROWS]))
    return {"devices": args.devices, "registers": args.registers, "interval_s": args.interval,
            "outage_s": outage, "runs": runs}
