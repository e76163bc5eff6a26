"""Pipeline benchmark: synthetic batches as fast as the gateway takes them, through the
rules stage and the outbox into real sinks, counted only once the sinks confirmed them.

    .venv/bin/python scripts/bench_pipeline.py [--quick] [--sinks history,influx,mqtt]

influx is a VictoriaMetrics and mqtt a Mosquitto started on free loopback ports
(scripts/services.py). Prints points per second, CPU seconds per 100,000 points and the
peak RSS of this process (which is the gateway: pipeline, outbox and sinks in one process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402

from gateway.batch import Batch  # noqa: E402
from gateway.catalog import Catalog, DeviceInfo  # noqa: E402
from gateway.config.models import (  # noqa: E402
    HistorySinkConfig,
    InfluxSinkConfig,
    MqttSinkConfig,
)
from gateway.outbox import Outbox  # noqa: E402
from gateway.pipeline import Pipeline  # noqa: E402
from gateway.sinks.runner import SinkRunner  # noqa: E402

DEVICES = 50
POINTS = 20  # per batch: a typical meter or VFD poll


def catalog() -> Catalog:
    devices = {
        f"dev{i}": DeviceInfo(f"dev{i}", None, "bench", "power",
                              {"site": "bench", "building": "1", "system": "power",
                               "device": f"dev{i}"},
                              {f"p{j}": "kW" for j in range(POINTS)})
        for i in range(DEVICES)
    }
    return Catalog("bench", "bench", devices)


def build_sinks(names: list[str], work: Path, cat: Catalog, started: list) -> list:
    from gateway.sinks.history import HistorySink
    from gateway.sinks.influx import InfluxSink
    from gateway.sinks.mqtt import MqttSink

    sinks = []
    for name in names:
        if name == "history":
            sinks.append((HistorySink(HistorySinkConfig(type="history"), work), 0.0))
        elif name == "influx":
            vm = services.start_victoria(work / "vm")
            started.append(vm)
            config = InfluxSinkConfig(type="influxdb", name="influx", url=vm.url, bucket="b",
                                      flush_interval=0.2)
            sinks.append((InfluxSink(config, cat), 0.2))
        elif name == "mqtt":
            broker = services.start_mosquitto(work / "mqtt")
            started.append(broker)
            config = MqttSinkConfig(host="127.0.0.1", port=broker.port)
            sinks.append((MqttSink(config, cat, client_id="bench"), 0.0))
        else:
            raise SystemExit(f"unknown sink {name!r}; choose from history, influx, mqtt")
    return sinks


async def run(batches: int, sink_names: list[str]) -> dict[str, float]:
    started: list = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cat = catalog()
        outbox = Outbox(work / "outbox.db", flush_interval=0.2, fsync="normal")
        await outbox.open()
        pipeline = Pipeline(outbox)
        runners = [SinkRunner(sink, outbox, linger=linger)
                   for sink, linger in build_sinks(sink_names, work, cat, started)]
        tasks = [asyncio.create_task(r.run()) for r in runners]
        names = tuple(f"p{j}" for j in range(POINTS))
        start_ts = time.time()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(batches):
            values = [float(i % 1000) + j * 0.5 for j in range(POINTS)]
            pipeline.emit_batch(Batch(f"dev{i % DEVICES}", start_ts + i * 0.001, names, values))
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the flusher and sinks run, as polls would
        await outbox.flush()
        last = outbox.stats.committed_seq
        while any(r.outbox.cursor(r.name) < last for r in runners):
            await asyncio.sleep(0.01)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        for r in runners:
            r.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in runners:
            await r.sink.stop()
        await outbox.close()
        for service in started:
            service.stop()
    points = batches * POINTS
    return {
        "sinks": ",".join(sink_names),
        "batches": batches,
        "points": points,
        "seconds": round(wall, 2),
        "points_per_second": round(points / wall),
        "cpu_seconds_per_100k_points": round(cpu / points * 100_000, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (10,000 batches)")
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--sinks", default="history,influx,mqtt")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    batches = 10_000 if args.quick else args.batches
    result = asyncio.run(run(batches, args.sinks.split(",")))
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
