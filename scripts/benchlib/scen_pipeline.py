"""Scenario `pipeline`: a synthetic source feeding the example site's gateway (its rules,
the outbox, an InfluxDB sink and the MQTT upstream) as fast as it takes batches; points per
second confirmed by both sinks, CPU seconds per 100,000 points and peak RSS of the process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib.figures import ProcSampler, mib
from benchlib.report import ROOT, table

WORKER = Path(__file__).resolve().parent / "pipeline_worker.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", default=str(ROOT / "config" / "site.yaml"),
                        help="the site whose rules and devices the batches go through")
    parser.add_argument("--seconds", type=float, default=None, help="measured window")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--influx", choices=("victoria", "influxdb1"), default="victoria",
                        help="the InfluxDB-API server: VictoriaMetrics (v2 API) or InfluxDB 1.x (v1)")
    parser.add_argument("--max-backlog", type=int, default=20_000)
    parser.add_argument("--profile", help="cProfile the measured window of the first run into this file")
    parser.add_argument("--rules", choices=("site", "none"), default="site",
                        help="none: no rules stage (to see its share of the cost)")
    parser.add_argument("--timestamps", choices=("replay", "wall"), default="replay",
                        help="see pipeline_worker.py: replay (each device's own poll interval, "
                             "the default) or wall (every batch at the wall clock)")


def one_run(args: argparse.Namespace, seconds: float, root: Path, profile: str | None) -> dict:
    import services

    broker = services.start_mosquitto(root / "mosquitto")
    if args.influx == "victoria":
        influx = services.start_victoria(root / "victoria")
        api, url = "v2", influx.url
    else:
        influx = services.start_influxdb1(root / "influxdb1")
        services.influx1_create_db(influx, "bench")
        api, url = "v1", influx.url
    log = root / "worker.log"
    try:
        cmd = [sys.executable, str(WORKER), "--site", args.site, "--data", str(root / "data"),
               "--influx-url", url, "--influx-api", api, "--mqtt-port", str(broker.port),
               "--seconds", str(seconds), "--max-backlog", str(args.max_backlog),
               "--timestamps", args.timestamps, "--rules", args.rules]
        if profile:
            cmd += ["--profile", profile]
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=str(ROOT))
            sampler = ProcSampler(proc.pid, 0.5).start()
            out, _ = proc.communicate(timeout=seconds + 180)
            sampler.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"pipeline worker failed ({proc.returncode}); log {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
        result = json.loads(out.decode().strip().splitlines()[-1])
        result["peak_rss_mib"] = mib(sampler.hwm_kib)
        result["influx"] = f"{args.influx} ({api} API)"
        if args.influx == "victoria":
            result["victoria_rows_inserted"] = _victoria_rows(influx)
        return result
    finally:
        broker.stop()
        influx.stop()


def _victoria_rows(vm) -> int | None:
    import urllib.request

    try:
        text = urllib.request.urlopen(vm.url + "/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith("vm_rows_inserted_total{") and 'type="influx"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


ROWS = [
    ("points/s confirmed by both sinks", "points_per_s"),
    ("CPU s per 100k points", "cpu_s_per_100k_points"),
    ("CPU % of a core", "cpu_percent_of_core"),
    ("peak RSS MiB", "peak_rss_mib"),
    ("points confirmed in window", "points_confirmed_in_window"),
    ("window s", "window_s"),
    ("devices / points per round", "shape"),
    ("timestamps", "timestamps"),
    ("rules stage", "rules_stage"),
    ("emitted points (whole run)", "emitted_points"),
    ("confirmed points (whole run)", "points_confirmed_total"),
    ("VictoriaMetrics rows inserted", "victoria_rows_inserted"),
]


def run(args: argparse.Namespace) -> dict:
    seconds = args.seconds or (8.0 if args.quick else 30.0)
    runs_n = 1 if args.quick else args.runs
    runs = []
    for n in range(runs_n):
        print(f"run {n + 1}/{runs_n}: {Path(args.site).name} rules → outbox → {args.influx} + "
              f"Mosquitto, {seconds:g}s window", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            r = one_run(args, seconds, Path(tmp), args.profile if n == 0 else None)
        r["shape"] = f"{r['devices']} / {r['points_per_round']}"
        runs.append(r)
    print(f"\n== pipeline: {args.site} → outbox → {args.influx} + Mosquitto "
          f"(timestamps: {args.timestamps}, rules: {args.rules})")
    print(table(["figure", *(f"run {i + 1}" for i in range(len(runs)))],
                [[label, *(r.get(key) for r in runs)] for label, key in ROWS]))
    return {"site": args.site, "seconds": seconds, "timestamps": args.timestamps,
            "rules": args.rules, "runs": runs}
