"""Scenario `modbus`: N simulated Modbus TCP devices × M registers polled every interval by
the gateway (a process), telemetry to Mosquitto, checked and timed at a subscriber."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlib import report
from benchlib.polling import Workload, measure
from benchlib.servers import ServerPool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    parser.add_argument("--duration", type=float, default=None, help="measured window, seconds")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--flush-interval", default="200ms",
                        help="this gateway's outbox group commit (site.yaml outbox.flush_interval; "
                             "200ms is the default)")
    parser.add_argument("--server", choices=("pymodbus", "fast"), default="pymodbus",
                        help="the simulated devices' server (see modbus_server.py)")


def rows(runs: list[dict]) -> list[list[object]]:
    keys = [
        ("points/s achieved", "points_per_s"), ("points/s offered", "points_offered_per_s"),
        ("values wrong", "values_wrong"),
        ("polls served", "polls_served"), ("polls scheduled", "polls_scheduled"),
        ("requests per poll", "requests_per_poll"),
        ("requests per poll, minimum", "requests_per_poll_minimum"),
        ("jitter p50 ms", ("jitter_ms", "p50")), ("jitter p99 ms", ("jitter_ms", "p99")),
        ("read→subscriber p50 ms", ("latency_ms", "p50")),
        ("read→subscriber p99 ms", ("latency_ms", "p99")),
        ("gateway CPU % of a core", "cpu_percent_of_core"),
        ("gateway CPU s per 100k points", "cpu_s_per_100k_points"),
        ("points per CPU-second", "points_per_cpu_s"),
        ("peak RSS MiB", "peak_rss_mib"),
        ("servers CPU %", "servers_cpu_percent"), ("Mosquitto CPU %", "broker_cpu_percent"),
    ]
    out = []
    for label, key in keys:
        row: list[object] = [label]
        for r in runs:
            row.append(r[key[0]][key[1]] if isinstance(key, tuple) else r[key])
        out.append(row)
    return out


def run(args: argparse.Namespace) -> dict:
    import services

    duration = args.duration or (10.0 if args.quick else 30.0)
    runs_n = 1 if args.quick else args.runs
    work = Workload(args.devices, args.registers, args.interval)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp:
        root = Path(tmp)
        broker = services.start_mosquitto(root / "mosquitto")
        try:
            with ServerPool(work.devices, work.registers, impl=args.server) as pool:
                for n in range(runs_n):
                    print(f"run {n + 1}/{runs_n}: {work.devices} devices × {work.registers} "
                          f"registers every {work.interval:g}s, {duration:g}s window", flush=True)
                    results.append(measure("ours", work, pool, broker, root / f"run{n}",
                                           duration=duration, flush_interval=args.flush_interval))
        finally:
            broker.stop()
    print(f"\n== modbus: {work.devices} devices × {work.registers} registers every "
          f"{work.interval:g}s ({args.server} servers)")
    print(report.table(["figure", *(f"run {i + 1}" for i in range(len(results)))], rows(results)))
    return {"workload": vars(work), "server": args.server, "duration_s": duration, "runs": results}
