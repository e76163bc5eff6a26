"""Scenario `alarm`: a value crossing a threshold in the simulator → the alarm's state at a
Mosquitto subscriber; p50/p99 raw, and with the poll phase (change → next poll) subtracted."""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from benchlib.figures import summary
from benchlib.gwproc import GatewayProc
from benchlib.report import table
from benchlib.servers import ServerPool
from benchlib.site import GATEWAY_ID, SITE_ID, Upstream, device_id, write_site
from benchlib.subscriber import Subscriber

LOW, HIGH, THRESHOLD = 50, 150, 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=10, help="devices on the gateway")
    parser.add_argument("--registers", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    parser.add_argument("--samples", type=int, default=None, help="raises measured (default 40)")
    parser.add_argument("--runs", type=int, default=2)


def _wait(predicate, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.002)
    return None


def one_run(args: argparse.Namespace, samples: int, root: Path) -> dict:
    import services

    rng = random.Random(1)
    broker = services.start_mosquitto(root / "mosquitto")
    pool = ServerPool(args.devices, args.registers).start()
    try:
        for d in range(args.devices):
            pool.set(d, 0, LOW)
        site = write_site(root / "site", ports=pool.ports, registers=args.registers,
                          poll_interval=f"{int(args.interval * 1000)}ms",
                          upstream=Upstream("127.0.0.1", broker.port), alarm_over=THRESHOLD)
        prefix = f"pm/{SITE_ID}/{GATEWAY_ID}"
        sub = Subscriber("127.0.0.1", broker.port, topics=(f"{prefix}/telemetry/+", f"{prefix}/alarms/+"),
                         client_id=f"bench-alarm-{time.time_ns()}").start()
        gw = GatewayProc(site, root / "data", log=root / "gateway.log").start()
        try:
            if not _wait(lambda: len({r.device for r in list(sub.readings)}) >= args.devices, 60):
                raise RuntimeError("not every device delivered:\n" + gw.log_tail())
            time.sleep(1.0)
            rows = []
            for i in range(samples):
                d = i % args.devices  # each device raises once per `devices` samples
                dev = device_id(d)
                topic = f"{prefix}/alarms/{dev}.high"
                time.sleep(rng.uniform(0.2, 0.2 + args.interval))  # a random poll phase
                seen = len(sub.others)
                t_change = time.time()
                pool.set(d, 0, HIGH)

                def raised(seen=seen, topic=topic):
                    for m in sub.others[seen:]:
                        if m.topic == topic and m.payload and m.payload.get("state", "").startswith("active"):
                            return m
                    return None

                m = _wait(raised, 10 + 3 * args.interval)
                if m is None:
                    raise RuntimeError(f"no alarm for {dev} within the time:\n" + gw.log_tail())
                # back below: the alarm returns (not measured beyond waiting for it)
                seen = len(sub.others)
                pool.set(d, 0, LOW)

                def returned(seen=seen, topic=topic):
                    for m in sub.others[seen:]:
                        if m.topic == topic and m.payload is not None and not m.payload.get("active", True):
                            return m
                    return None

                back = _wait(returned, 10 + 3 * args.interval)
                rows.append({"device": dev, "t_change": t_change, "arrival": m.arrival,
                             "raw_s": m.arrival - t_change, "returned": back is not None})
            time.sleep(args.interval + 1.0)  # the telemetry of the last polls arrives
            # the poll that saw the change: the device's first read after it (its ts)
            for row in rows:
                polls = sorted(r.ts for r in list(sub.readings)
                               if r.device == row["device"] and r.ts >= row["t_change"])
                t_read = polls[0] if polls else None
                row["phase_s"] = None if t_read is None else t_read - row["t_change"]
                row["corrected_s"] = None if t_read is None else row["arrival"] - t_read
        finally:
            gw.stop()
            sub.stop()
    finally:
        pool.stop()
        broker.stop()
    raw = [r["raw_s"] for r in rows]
    corrected = [r["corrected_s"] for r in rows if r["corrected_s"] is not None]
    phase = [r["phase_s"] for r in rows if r["phase_s"] is not None]
    return {
        "samples": len(rows),
        "raw_ms": summary(raw, 1000),
        "poll_phase_ms": summary(phase, 1000),
        "phase_corrected_ms": summary(corrected, 1000),
        "returned": sum(r["returned"] for r in rows),
        "rows": rows,
    }


def run(args: argparse.Namespace) -> dict:
    samples = args.samples or (8 if args.quick else 40)
    runs_n = 1 if args.quick else args.runs
    runs = []
    for n in range(runs_n):
        print(f"run {n + 1}/{runs_n}: {samples} raises, {args.devices} devices polled every "
              f"{args.interval:g}s", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-alarm-") as tmp:
            runs.append(one_run(args, samples, Path(tmp)))
    print(f"\n== alarm: register over {THRESHOLD} → alarm_state at the subscriber "
          f"(poll interval {args.interval:g}s)")
    rows = []
    for label, key in (("raw", "raw_ms"), ("poll phase", "poll_phase_ms"),
                       ("phase-corrected", "phase_corrected_ms")):
        for i, r in enumerate(runs):
            s = r[key]
            rows.append([f"{label}, run {i + 1}", s["count"], s["p50"], s["p99"], s["max"]])
    print(table(["ms", "n", "p50", "p99", "max"], rows))
    return {"devices": args.devices, "registers": args.registers, "interval_s": args.interval,
            "threshold": THRESHOLD, "runs": runs}
