"""Scenario `rules`: the example site's rule engine alone, in this process: batches from the
site simulator's models, stamped as the pipeline benchmark's replay stamps them, through
`RuleEngine.process`; points per second and CPU seconds per 100,000 points once every
window is full. No outbox, no sinks, no energy stage, no timer ticks (their cost goes
by the second, not by the point): the rules stage's own cost per reading.

The engine's clock is the data's time, and frames and stamps are fixed, so two runs on
the same code produce the same outputs; the `outputs digest` shows that a change to the
engine kept what it computes.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import math
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from benchlib.report import ROOT, table

# 2024-03-04 08:00 in the site's zone (Asia/Shanghai): a working morning, fixed so the
# simulator's daily profiles give the same frames every run.
START = 1_709_510_400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", default=str(ROOT / "config" / "site.yaml"),
                        help="the site whose rules and devices the batches go through")
    parser.add_argument("--points", type=int, default=None,
                        help="points measured after the warm-up (default 1,000,000; quick 150,000)")
    parser.add_argument("--runs", type=int, default=None, help="runs (default 3; quick 1)")
    parser.add_argument("--frames", type=int, default=64, help="distinct frames per device")
    parser.add_argument("--warmup", type=float, default=None,
                        help="data seconds replayed before measuring (default: the longest "
                             "window any rule reads, plus a minute, so every window is full)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the measured part of the first run; print the top 20")


def _frames(config, count: int) -> list[tuple[str, tuple[str, ...], list[list], float]]:
    """The pipeline benchmark's frames, with the simulator's clock at START (its models
    follow the time of day, so the wall clock would change the frames)."""
    from benchlib import pipeline_worker

    return pipeline_worker.frames_for(config, count, start=START)


def _digest(items, sink) -> None:
    """Feed what the engine produced into `sink` (a hash), in a stable form."""
    from gateway.batch import Batch

    for item in items:
        if isinstance(item, Batch):
            body = [item.device, item.ts, list(item.points), item.values, item.quality]
        else:
            body = [item.type, item.ts, item.device, item.body]
        sink.update(json.dumps(body, sort_keys=True, default=str).encode())


class _DataClock:
    """The engine's clock: the time of the batch being processed."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def one_run(args: argparse.Namespace, points_wanted: int, profile: bool) -> dict:
    from gateway.batch import Batch
    from gateway.config.loader import load_site
    from rules.engine.engine import RuleEngine

    config = load_site(args.site)
    frames = _frames(config, args.frames)
    clock = _DataClock()
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        engine = RuleEngine(config, Path(tmp), clock=clock)
        engine.open()
        longest = max((max(rule.windows.values(), default=0.0)
                       for rule in engine.index.order), default=0.0)
        warmup = args.warmup if args.warmup is not None else longest + 60.0
        # each device's round k is stamped START + k x its poll interval (pipeline_worker's
        # replay): round counts come from the fastest device, so all windows fill
        fastest = min(f[3] for f in frames)
        warm_rounds = math.ceil(warmup / fastest)
        per_round = sum(len(f[1]) for f in frames)
        measured_rounds = max(1, math.ceil(points_wanted / per_round))
        # batches built before the clock starts: the source's cost is not the engine's
        rounds = [[Batch(device, START + k * interval, names, values[k % len(values)])
                   for device, names, values, interval in frames]
                  for k in range(warm_rounds + measured_rounds)]
        produced: list = []  # digested after the clock stops

        def feed(batches_of_rounds) -> None:
            keep = produced.extend
            for batches in batches_of_rounds:
                for batch in batches:
                    clock.now = batch.ts
                    keep(engine.process(batch))

        load_before = os.getloadavg()
        feed(rounds[:warm_rounds])
        evaluations_before = engine.evaluator.evaluations
        profiler = cProfile.Profile() if profile else None
        # CPU per tenth of the measured rounds too: on a shared machine the cheapest tenth
        # is the steadiest figure to compare two versions by (same data, same tenths)
        tenth = max(1, measured_rounds // 10)
        tenths = []
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for start in range(warm_rounds, warm_rounds + measured_rounds, tenth):
            part = rounds[start:min(start + tenth, warm_rounds + measured_rounds)]
            c = time.process_time()
            feed(part)
            tenths.append((time.process_time() - c) / (len(part) * per_round) * 100_000)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        load_after = os.getloadavg()
        outputs = hashlib.sha256()
        _digest(produced, outputs)
        derived = sum(1 for item in produced if isinstance(item, Batch))
        history = engine.history
        kept = [len(s) for s in history._points.values()]  # noqa: SLF001 - a figure
        engine.close()
    points = measured_rounds * per_round
    result = {
        "devices": len(frames),
        "points_per_round": per_round,
        "rules": len(engine.index.order),
        "longest_window_s": longest,
        "warmup_data_s": warmup,
        "warmup_rounds": warm_rounds,
        "measured_rounds": measured_rounds,
        "points_measured": points,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "points_per_s": round(points / wall),
        "cpu_s_per_100k_points": round(cpu / points * 100_000, 3),
        "cpu_s_per_100k_points_best_tenth": round(min(tenths), 3),
        "evaluations_measured": engine.evaluator.evaluations - evaluations_before,
        "evaluation_errors": engine.evaluator.errors,
        "history_points": len(kept),
        "history_samples": sum(kept),
        "history_largest": max(kept, default=0),
        "derived_batches": derived,
        "events": len(produced) - derived,
        "outputs_digest": outputs.hexdigest()[:16],
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
    }
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(20)
        text.write("\n")
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        result["profile_top20"] = text.getvalue()
    return result


ROWS = [
    ("points/s", "points_per_s"),
    ("CPU s per 100k points", "cpu_s_per_100k_points"),
    ("  in the cheapest tenth of the rounds", "cpu_s_per_100k_points_best_tenth"),
    ("points measured", "points_measured"),
    ("rule evaluations measured", "evaluations_measured"),
    ("evaluation errors", "evaluation_errors"),
    ("devices / points per round / rules", "shape"),
    ("warm-up data s / rounds", "warmup"),
    ("samples in history (points / largest)", "kept"),
    ("derived batches / events (whole run)", "outputs"),
    ("outputs digest", "outputs_digest"),
    ("load average before / after", "load"),
]


def run(args: argparse.Namespace) -> dict:
    points = args.points or (150_000 if args.quick else 1_000_000)
    runs_n = args.runs or (1 if args.quick else 3)
    runs = []
    for n in range(runs_n):
        print(f"run {n + 1}/{runs_n}: {Path(args.site).name} rules, {points:,} points after "
              f"the warm-up", flush=True)
        r = one_run(args, points, args.profile and n == 0)
        r["shape"] = f"{r['devices']} / {r['points_per_round']} / {r['rules']}"
        r["warmup"] = f"{r['warmup_data_s']:g} / {r['warmup_rounds']}"
        r["kept"] = f"{r['history_samples']:,} ({r['history_points']} / {r['history_largest']})"
        r["outputs"] = f"{r['derived_batches']:,} / {r['events']:,}"
        r["load"] = "{} / {}".format(*(" ".join(f"{x:g}" for x in r[k])
                                       for k in ("load_avg_before", "load_avg_after")))
        if "profile_top20" in r:
            print(r["profile_top20"])
        runs.append(r)
    print(f"\n== rules: {args.site}, RuleEngine.process alone (replay timestamps)")
    print(table(["figure", *(f"run {i + 1}" for i in range(len(runs)))],
                [[label, *(r.get(key) for r in runs)] for label, key in ROWS]))
    rates = [r["points_per_s"] for r in runs]
    print(f"\nmedian {statistics.median(rates):,.0f} points/s, "
          f"{statistics.median(r['cpu_s_per_100k_points'] for r in runs):g} CPU s per 100k points "
          f"(cheapest tenth: best {min(r['cpu_s_per_100k_points_best_tenth'] for r in runs):g})")
    return {"site": args.site, "points": points, "runs": runs}
