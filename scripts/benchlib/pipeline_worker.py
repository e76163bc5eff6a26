"""The pipeline benchmark's gateway process: the example site's Gateway (rules, outbox,
sinks) with its drivers replaced by a synthetic source that emits batches as fast as the
gateway takes them. Run by scen_pipeline.py; prints one JSON line of figures at the end.

    python pipeline_worker.py --site config/site.yaml --data DIR --influx-url URL \
        --mqtt-port PORT --warmup 3 --seconds 30

The source cycles through frames precomputed from the site simulator's models (the
values each device of the example site would read), stamps each batch with the wall
clock, and keeps at most `--max-backlog` records appended but not yet confirmed by every
sink: the rate it sustains is the rate the sinks confirm. A point counts once every sink
has confirmed the record holding it (InfluxDB answered 2xx, the broker sent PUBACK).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

from benchlib.figures import cpu_seconds  # noqa: E402


def _quiet_value(point, rng: random.Random):
    """A plausible, steady value for a point the simulator has no model for (BACnet, MQTT):
    inside min/max, the first mapped or enumerated value, else a small number."""
    kind = getattr(point, "type", "number")
    if getattr(point, "map", None):
        return next(iter(point.map.values()))
    if getattr(point, "enum", None):
        return next(iter(point.enum.values()))
    if kind in ("bool", "boolean"):
        return 0
    if kind in ("string", "text"):
        return "ok"
    low = point.min if point.min is not None else 0.0
    high = point.max if point.max is not None else 100.0
    return round(low + (high - low) * rng.uniform(0.4, 0.6), 3)


def frames_for(config, count: int, seed: int = 7,
               start: float | None = None) -> list[tuple[str, tuple[str, ...], list[list], float]]:
    """(device, point names, [values per frame], poll interval) for every enabled device:
    Modbus devices from the site simulator's models, the others steady (`_quiet_value`).

    Patrol checkpoint readers are left out: each of their messages is a guard's swipe (a
    few an hour), not a poll, and a swipe a second would measure a site that is not."""
    from simsite.dynamics import SimClock, make_model

    rng = random.Random(seed)
    clock = SimClock(time.time() if start is None else start, 60.0, config.site.timezone)
    checkpoints = {c.device for c in config.patrols.checkpoints}
    out = []
    for device in config.devices:
        if not device.enabled or device.id in checkpoints:
            continue
        profile = config.profiles[device.profile]
        names = tuple(profile.points)
        frames = []
        if profile.protocol == "modbus":
            model = make_model(profile, rng)
            for _ in range(count):
                clock.advance(0.5)
                model.step(30.0, clock.time)
                frames.append([model.values.get(n, 0) for n in names])
        else:
            steady = [_quiet_value(profile.points[n], rng) for n in names]
            frames = [list(steady) for _ in range(count)]
        out.append((device.id, names, frames, device.poll_interval))
    return out


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", default="config/site.yaml")
    parser.add_argument("--data", required=True)
    parser.add_argument("--influx-url", required=True)
    parser.add_argument("--influx-api", choices=("v1", "v2"), default="v2")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-backlog", type=int, default=20_000, help="records")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--profile", help="write cProfile stats of the measured window here")
    parser.add_argument("--timestamps", choices=("replay", "wall"), default="replay",
                        help="replay: round k of a device is stamped start + k × its poll "
                             "interval (its rules see the series a real poll would give, only "
                             "faster); wall: every batch stamped with the wall clock (each device "
                             "as if polled as fast as the source goes: windows fill with samples)")
    parser.add_argument("--rules", choices=("site", "none"), default="site",
                        help="none: the rules stage passes batches through (to see its share)")
    args = parser.parse_args(argv)

    import gateway.daemon as daemon
    from gateway import logs
    from gateway.batch import Batch
    from gateway.config.loader import load_site
    from gateway.config.models import InfluxSinkConfig, MqttSinkConfig

    config = load_site(args.site)
    influx = (InfluxSinkConfig(type="influxdb", name="influx", url=args.influx_url, api="v2",
                               org="bench", bucket="bench", flush_interval=0.2)
              if args.influx_api == "v2" else
              InfluxSinkConfig(type="influxdb", name="influx", url=args.influx_url, api="v1",
                               database="bench", flush_interval=0.2))
    upstream = MqttSinkConfig(host="127.0.0.1", port=args.mqtt_port, gateway_id="gw1",
                              client_id="bench-pipeline", keepalive=30.0)
    config = config.model_copy(update={"sinks": [influx], "upstream": upstream,
                                       "data_dir": Path(args.data)})
    logs.configure(config.logging.level, "json")
    frames = frames_for(config, args.frames)
    daemon._create_drivers = lambda config, driver_set: []  # the synthetic source instead
    gw = daemon.Gateway(config, data_dir=Path(args.data))
    await gw.start()
    outbox, pipeline = gw.outbox, gw.pipeline
    if args.rules == "none":
        from rules.stage import PassThrough

        pipeline.rules = PassThrough()
    names = [r.name for r in gw.runners]

    def confirmed_seq() -> int:
        return min(outbox.cursor(n) for n in names)

    # checkpoints: (records appended so far, points emitted so far); seq == append index
    marks_appended: list[int] = [0]
    marks_points: list[int] = [0]

    def points_confirmed() -> int:
        i = bisect.bisect_right(marks_appended, confirmed_seq()) - 1
        return marks_points[i]

    base_seq = outbox.stats.committed_seq  # a fresh outbox starts at 0
    emitted_points = emitted_batches = 0
    waits = 0
    frame = 0
    rounds = 0
    start = time.time()
    t_measure = start + args.warmup
    t_end = t_measure + args.seconds
    window: dict[str, float] = {}
    profiler = None
    while True:
        now = time.time()
        if "t0" not in window and now >= t_measure:
            window.update(t0=now, cpu0=cpu_seconds(os.getpid()), p0=points_confirmed())
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
        if now >= t_end:
            window.update(t1=now, cpu1=cpu_seconds(os.getpid()), p1=points_confirmed())
            break
        if outbox.stats.appended - (confirmed_seq() - base_seq) > args.max_backlog:
            waits += 1
            await asyncio.sleep(0.002)
            continue
        wall = time.time()
        for device, points, values, interval in frames:
            ts = wall if args.timestamps == "wall" else start + rounds * interval
            pipeline.emit_batch(Batch(device, ts, points, values[frame]))
            emitted_points += len(points)
            emitted_batches += 1
        frame = (frame + 1) % args.frames
        rounds += 1
        marks_appended.append(outbox.stats.appended)
        marks_points.append(emitted_points)
        await asyncio.sleep(0)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    # everything emitted confirmed: the drain after the window, for the record
    drain_start = time.time()
    while confirmed_seq() - base_seq < outbox.stats.appended and time.time() - drain_start < 60:
        await outbox.flush()
        await asyncio.sleep(0.01)
    drained = time.time() - drain_start
    total_confirmed = points_confirmed()
    rules = gw.rules.stats()
    await gw.stop()
    wall = window["t1"] - window["t0"]
    points = window["p1"] - window["p0"]
    cpu = window["cpu1"] - window["cpu0"]
    print(json.dumps({
        "devices": len(frames),
        "points_per_round": sum(len(f[1]) for f in frames),
        "timestamps": args.timestamps,
        "rules_stage": args.rules,
        "rounds": rounds,
        "data_time_covered_s": round(rounds * max(f[3] for f in frames)),
        "window_s": round(wall, 2),
        "points_confirmed_in_window": points,
        "points_per_s": round(points / wall),
        "cpu_s": round(cpu, 2),
        "cpu_percent_of_core": round(cpu / wall * 100, 1),
        "cpu_s_per_100k_points": round(cpu / points * 100_000, 3) if points else None,
        "emitted_points": emitted_points,
        "emitted_batches": emitted_batches,
        "records_appended": outbox.stats.appended,
        "points_confirmed_total": total_confirmed,
        "drain_after_window_s": round(drained, 2),
        "source_waits": waits,
        "rules": rules,
    }, default=str), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
