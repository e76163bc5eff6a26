"""Scenario `footprint`: RSS of the gateway running a 10,000-point config (and a tiny one for
comparison), start-up time to the first poll with 1,000 devices, `gateway check` time on that
config, and which libraries a Modbus-only site loads."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib.figures import mib
from benchlib.gwproc import GatewayProc, clean_env, gateway_command
from benchlib.report import ROOT, table
from benchlib.servers import ServerPool
from benchlib.site import GATEWAY_ID, SITE_ID, Upstream, write_site
from benchlib.subscriber import Subscriber

# Top-level packages worth naming when a Modbus + MQTT site loads them.
HEAVY = ("bacpypes3", "drivers.bacnet", "drivers.mqtt", "influxdb_client", "aiohttp", "lark",
         "apscheduler", "pydantic", "pymodbus", "paho", "structlog", "serial", "yaml", "ruamel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points-devices", type=int, default=100, help="devices of the 10,000-point config")
    parser.add_argument("--points-registers", type=int, default=100)
    parser.add_argument("--idle-interval", type=float, default=5.0, help="their poll interval")
    parser.add_argument("--startup-devices", type=int, default=1000)
    parser.add_argument("--startup-registers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)


def _polled(device: str) -> bool:
    """A simulated device's id (`d0042`), as opposed to the site's own readings."""
    return device.startswith("d") and device[1:].isdigit()


def _wait_devices(sub: Subscriber, n: int, gw: GatewayProc, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len({r.device for r in list(sub.readings) if _polled(r.device)}) >= n:
            return time.time()
        if not gw.alive():
            raise RuntimeError("gateway exited:\n" + gw.log_tail())
        time.sleep(0.05)
    return None


def idle(root: Path, broker, devices: int, registers: int, interval: float, seconds: float) -> dict:
    with ServerPool(devices, registers, impl="fast", per_process=100) as pool:
        site = write_site(root / "site", ports=pool.ports, registers=registers,
                          poll_interval=f"{int(interval * 1000)}ms",
                          upstream=Upstream("127.0.0.1", broker.port))
        sub = Subscriber("127.0.0.1", broker.port, topics=(f"pm/{SITE_ID}/{GATEWAY_ID}/telemetry/+",),
                         client_id=f"bench-idle-{time.time_ns()}", keep_other=False).start()
        gw = GatewayProc(site, root / "data", log=root / "gateway.log", sample_every=0.5).start()
        try:
            if _wait_devices(sub, devices, gw, 60) is None:
                raise RuntimeError("not every device delivered:\n" + gw.log_tail())
            t0 = time.time()
            time.sleep(seconds)
            t1, c1 = gw.sampler.mark()
            rss = [r for _, r in gw.sampler.rss_between(t0, t1)]
        finally:
            gw.stop()
            sub.stop()
    return {"devices": devices, "registers": registers, "points": devices * registers,
            "poll_interval_s": interval, "rss_mib": mib(statistics.median(rss)) if rss else None,
            "peak_rss_mib": mib(gw.sampler.hwm_kib)}


def startup(root: Path, broker, devices: int, registers: int) -> dict:
    with ServerPool(devices, registers, impl="fast", per_process=250) as pool:
        site = write_site(root / "site", ports=pool.ports, registers=registers,
                          poll_interval="5s", upstream=Upstream("127.0.0.1", broker.port))
        checks = []
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run([*gateway_command(), "check", "-c", str(site)], capture_output=True,
                                 text=True, env=clean_env(), cwd=str(ROOT))
            checks.append(time.perf_counter() - t)
            if out.returncode != 0:
                raise RuntimeError(f"gateway check failed:\n{out.stdout}\n{out.stderr}")
        sub = Subscriber("127.0.0.1", broker.port, topics=(f"pm/{SITE_ID}/{GATEWAY_ID}/telemetry/+",),
                         client_id=f"bench-start-{time.time_ns()}", keep_other=False).start()
        gw = GatewayProc(site, root / "data", log=root / "gateway.log").start()
        try:
            all_at = _wait_devices(sub, devices, gw, 120)
            time.sleep(1.0)
        finally:
            gw.stop()
            sub.stop()
    spawn = gw.started_at
    firsts: dict[str, float] = {}
    for r in sub.readings:
        if _polled(r.device):  # not the site's own readings (alarm counts, KPIs)
            firsts[r.device] = min(firsts.get(r.device, r.ts), r.ts)
    first_arrival = min((r.arrival for r in sub.readings), default=None)
    return {
        "devices": devices, "registers": registers,
        "first_poll_s": round(min(firsts.values()) - spawn, 2) if firsts else None,
        "all_devices_polled_s": round(max(firsts.values()) - spawn, 2) if len(firsts) == devices else None,
        "first_telemetry_at_subscriber_s": None if first_arrival is None else round(first_arrival - spawn, 2),
        "all_devices_at_subscriber_s": None if all_at is None else round(all_at - spawn, 2),
        "check_s": [round(c, 2) for c in checks],
        "check_median_s": round(statistics.median(checks), 2),
        "peak_rss_mib": mib(gw.sampler.hwm_kib),
    }


def imports(root: Path, broker, devices: int, registers: int) -> dict:
    """Start the gateway with -X importtime on a Modbus-only site and list what it loaded."""
    with ServerPool(devices, registers, impl="fast", per_process=100) as pool:
        site = write_site(root / "site", ports=pool.ports, registers=registers, poll_interval="5s",
                          upstream=Upstream("127.0.0.1", broker.port))
        gw = GatewayProc(site, root / "data", log=root / "gateway.log",
                         env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
        time.sleep(8)
        gw.stop()
    modules = []
    cumulative: dict[str, int] = {}
    for line in gw.log.read_text(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if m:
            name = m.group(4)
            modules.append(name)  # also an import tried and failed (pymodbus tries some)
            if "." not in name:  # a package's own import, with everything it imported first
                cumulative[name] = max(cumulative.get(name, 0), int(m.group(2)))
    loaded = {h: any(n == h or n.startswith(h + ".") for n in modules) for h in HEAVY}
    ours = ("gateway", "drivers", "rules", "site", "encodings")
    top = sorted(((k, v) for k, v in cumulative.items() if k not in ours), key=lambda kv: -kv[1])[:12]
    return {"modules": len(modules), "loaded": loaded,
            "top_import_ms": [(k, round(v / 1000, 1)) for k, v in top]}


def run(args: argparse.Namespace) -> dict:
    import services

    seconds = 10.0 if args.quick else 30.0
    runs_n = 1 if args.quick else args.runs
    startup_devices = 200 if args.quick else args.startup_devices
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        root = Path(tmp)
        broker = services.start_mosquitto(root / "mosquitto")
        try:
            for n in range(runs_n):
                print(f"run {n + 1}/{runs_n}: idle RSS, start-up with {startup_devices} devices, "
                      "gateway check", flush=True)
                runs.append({
                    "idle_10k": idle(root / f"idle{n}", broker, args.points_devices,
                                     args.points_registers, args.idle_interval, seconds),
                    "idle_tiny": idle(root / f"tiny{n}", broker, 1, 10, args.idle_interval, seconds),
                    "startup": startup(root / f"start{n}", broker, startup_devices, args.startup_registers),
                })
            loaded = imports(root / "imports", broker, 10, 10)
        finally:
            broker.stop()
    print("\n== footprint")
    rows = [
        ("RSS, 10,000 points running (median) MiB", lambda r: r["idle_10k"]["rss_mib"]),
        ("peak RSS, 10,000 points MiB", lambda r: r["idle_10k"]["peak_rss_mib"]),
        ("RSS, 1 device × 10 points MiB", lambda r: r["idle_tiny"]["rss_mib"]),
        (f"first poll after spawn s ({startup_devices} devices)", lambda r: r["startup"]["first_poll_s"]),
        ("every device polled once s", lambda r: r["startup"]["all_devices_polled_s"]),
        ("first telemetry at subscriber s", lambda r: r["startup"]["first_telemetry_at_subscriber_s"]),
        ("every device at subscriber s", lambda r: r["startup"]["all_devices_at_subscriber_s"]),
        ("gateway check s (median of 3)", lambda r: r["startup"]["check_median_s"]),
        (f"peak RSS, {startup_devices} devices MiB", lambda r: r["startup"]["peak_rss_mib"]),
    ]
    print(table(["figure", *(f"run {i + 1}" for i in range(len(runs)))],
                [[label, *(f(r) for r in runs)] for label, f in rows]))
    print("imported (or tried) by a Modbus-only site (tests/integration/test_footprint_imports.py checks what stays loaded): "
          + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in loaded["loaded"].items()))
    print("slowest third-party imports, cumulative (ms): " + ", ".join(f"{k} {v}" for k, v in loaded["top_import_ms"]))
    return {"startup_devices": startup_devices, "runs": runs, "imports": loaded}
