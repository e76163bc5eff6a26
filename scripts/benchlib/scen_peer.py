"""Scenario `peer`: the same Modbus workload polled by ThingsBoard IoT Gateway 3.8.5 (one key
per register, and its "wide range" form) and by this gateway, one after the other in one run,
each publishing to the same Mosquitto; figures for each and the ratios."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlib import tb
from benchlib.polling import KINDS, Workload, measure
from benchlib.report import table
from benchlib.servers import ServerPool

ROWS = [
    ("points/s delivered", "points_per_s"), ("values wrong", "values_wrong"),
    ("polls served", "polls_served"), ("polls scheduled", "polls_scheduled"),
    ("polls delivered (distinct ts)", "polls_delivered"),
    ("requests per poll", "requests_per_poll"),
    ("CPU % of a core", "cpu_percent_of_core"), ("points per CPU-second", "points_per_cpu_s"),
    ("peak RSS MiB", "peak_rss_mib"),
    ("ts→subscriber p50 ms", ("latency_ms", "p50")), ("ts→subscriber p99 ms", ("latency_ms", "p99")),
    ("poll jitter p50 ms", ("jitter_ms", "p50")), ("poll jitter p99 ms", ("jitter_ms", "p99")),
    ("servers CPU %", "servers_cpu_percent"), ("Mosquitto CPU %", "broker_cpu_percent"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--flush-interval", default="200ms",
                        help="this gateway's outbox group commit (site.yaml outbox.flush_interval; "
                             "200ms is the default)")
    parser.add_argument("--server", choices=("pymodbus", "fast"), default="fast",
                        help="the devices' server; pymodbus's own cannot keep up with one "
                             "request per register from 50 devices (docs/benchmarks.md)")
    parser.add_argument("--kinds", default="tb-keys,tb-wide,ours")


def _get(r: dict, key):
    return r[key[0]][key[1]] if isinstance(key, tuple) else r[key]


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def ratios(results: dict[str, dict]) -> dict[str, object]:
    ours = results.get("ours")
    tbs = {k: v for k, v in results.items() if k.startswith("tb-")}
    if not ours or not tbs:
        return {}
    fastest_kind = max(tbs, key=lambda k: tbs[k]["points_per_cpu_s"] or 0)
    fastest = tbs[fastest_kind]
    return {
        "tb_fastest": fastest_kind,
        "points_per_cpu_s_ratio_vs_fastest": _ratio(ours["points_per_cpu_s"], fastest["points_per_cpu_s"]),
        "points_per_cpu_s_ratio_vs_keys": (_ratio(ours["points_per_cpu_s"], tbs["tb-keys"]["points_per_cpu_s"])
                                           if "tb-keys" in tbs else None),
        "peak_rss_ratio_ours_over_fastest": _ratio(ours["peak_rss_mib"], fastest["peak_rss_mib"]),
        "latency_p99_ratio_ours_over_fastest": _ratio(ours["latency_ms"]["p99"], fastest["latency_ms"]["p99"]),
        "requests_per_poll": {k: v["requests_per_poll"] for k, v in results.items()},
    }


def run(args: argparse.Namespace) -> dict:
    import services

    tb.ensure_venv()
    duration = args.duration or (10.0 if args.quick else 30.0)
    runs_n = 1 if args.quick else args.runs
    kinds = [k for k in args.kinds.split(",") if k]
    work = Workload(args.devices, args.registers, args.interval)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        root = Path(tmp)
        broker = services.start_mosquitto(root / "mosquitto")
        try:
            with ServerPool(work.devices, work.registers, impl=args.server) as pool:
                for n in range(runs_n):
                    results = {}
                    for kind in kinds:
                        print(f"run {n + 1}/{runs_n}: {KINDS[kind]}, {work.devices} devices × "
                              f"{work.registers} registers every {work.interval:g}s, "
                              f"{duration:g}s window", flush=True)
                        results[kind] = measure(kind, work, pool, broker, root / f"run{n}-{kind}",
                                                duration=duration,
                                                flush_interval=args.flush_interval)
                    runs.append({"results": results, "ratios": ratios(results)})
                    print(f"\n== peer, run {n + 1}: {work.devices} devices × {work.registers} "
                          f"registers every {work.interval:g}s ({args.server} servers)")
                    print(table(["figure", *kinds],
                                [[label, *(_get(results[k], key) for k in kinds)] for label, key in ROWS]))
                    for key, val in runs[-1]["ratios"].items():
                        print(f"{key}: {val}")
        finally:
            broker.stop()
    return {
        "workload": vars(work), "server": args.server, "duration_s": duration,
        "peer": {"package": "thingsboard-gateway", "version": tb.TB_VERSION,
                 "venv": str(tb.VENV), "packages": list(tb.PACKAGES)},
        "configs": {
            "tb-keys": tb.slave(0, 5020, min(work.registers, 3), int(work.interval * 1000), wide=False),
            "tb-wide": tb.slave(0, 5020, work.registers, int(work.interval * 1000), wide=True),
            "tb_gateway_json_changes": "the shipped tb_gateway.json with thingsboard.host/port "
                                       "set to the benchmark's Mosquitto, security accessToken, "
                                       "remoteConfiguration false, "
                                       "connectors = [modbus: modbus.json]; shipped logs.json",
        },
        "runs": runs,
    }
