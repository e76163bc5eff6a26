"""Figures: percentiles, and a process's CPU seconds and memory read from /proc.

CPU seconds are utime + stime of /proc/<pid>/stat (all the process's threads), in clock
ticks; peak RSS is VmHWM and the current RSS VmRSS of /proc/<pid>/status. A `ProcSampler`
reads VmRSS every `interval` on a thread, so a run can show that RSS stayed flat.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks
    (numpy's default); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(data[low])
    return data[low] + (data[high] - data[low]) * (rank - low)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> dict[str, float | int | None]:
    """count, p50, p90, p99, max and mean of `values` times `scale`, rounded."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(x * scale, digits)

    return {
        "count": len(values),
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values) if values else None),
        "mean": r(sum(values) / len(values) if values else None),
    }


def parse_stat_cpu(text: str, clk_tck: int = CLK_TCK) -> float:
    """utime + stime in seconds from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may contain spaces or ')', so fields
    are counted from the last ')'.
    """
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / clk_tck


def parse_status_kib(text: str, key: str) -> int | None:
    """A 'kB' line of /proc/<pid>/status (VmRSS, VmHWM...) in KiB; None if absent."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat_cpu(f.read())


def memory_kib(pid: int) -> dict[str, int | None]:
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return {"rss": parse_status_kib(text, "VmRSS"), "hwm": parse_status_kib(text, "VmHWM")}


def mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


@dataclass
class ProcSampler:
    """Samples a process's VmRSS (and keeps its last CPU and VmHWM) every `interval` s.

    `mark()` returns (wall, cpu) now, so a caller can take the CPU of a window:
    `cpu_between(a, b)`. The samples outlive the process: after it exits, the last ones read
    stay (a dead process's /proc entry is gone).
    """

    pid: int
    interval: float = 0.5
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (wall, cpu s, rss KiB)
    hwm_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ProcSampler:
        self._thread = threading.Thread(target=self._run, name=f"sample-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> tuple[float, float, int] | None:
        try:
            cpu = cpu_seconds(self.pid)
            mem = memory_kib(self.pid)
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            return None
        if mem["hwm"] is not None:
            self.hwm_kib = max(self.hwm_kib, mem["hwm"])
        return (time.time(), cpu, mem["rss"] or 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._read()
            if sample is None:
                return
            self.samples.append(sample)
            self._stop.wait(self.interval)

    def mark(self) -> tuple[float, float]:
        """(wall time, CPU seconds) now; the last sample's CPU if the process is gone."""
        sample = self._read()
        if sample is None:
            return (time.time(), self.samples[-1][1] if self.samples else 0.0)
        self.samples.append(sample)
        return sample[0], sample[1]

    def stop(self) -> None:
        self._read()  # a last VmHWM
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def rss_between(self, t0: float, t1: float) -> list[tuple[float, int]]:
        return [(t, rss) for t, _cpu, rss in self.samples if t0 <= t <= t1]


def rss_trend(samples: Sequence[tuple[float, int]]) -> dict[str, float | None]:
    """first, last, min, max RSS (MiB) of (wall, KiB) samples and the least-squares slope
    in MiB per minute: what 'flat' is judged by."""
    if not samples:
        return {"samples": 0, "first_mib": None, "last_mib": None, "min_mib": None,
                "max_mib": None, "slope_mib_per_min": None}
    ts = [t for t, _ in samples]
    ys = [r / 1024 for _, r in samples]
    n = len(samples)
    slope = None
    if n >= 2 and ts[-1] > ts[0]:
        mt, my = sum(ts) / n, sum(ys) / n
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var * 60
    return {
        "samples": n,
        "first_mib": round(ys[0], 1),
        "last_mib": round(ys[-1], 1),
        "min_mib": round(min(ys), 1),
        "max_mib": round(max(ys), 1),
        "slope_mib_per_min": None if slope is None else round(slope, 2),
    }


def best(runs: Sequence[dict], key: str, higher: bool = True) -> dict:
    """The run with the best `key` (highest by default)."""
    ranked = [r for r in runs if r.get(key) is not None]
    if not ranked:
        return runs[0]
    return (max if higher else min)(ranked, key=lambda r: r[key])
