"""The benchmark's figure helpers (scripts/benchlib/figures.py): percentiles, /proc parsing,
the RSS trend, and a sampler reading this very process."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchlib.figures import (  # noqa: E402
    ProcSampler,
    cpu_seconds,
    memory_kib,
    parse_stat_cpu,
    parse_status_kib,
    percentile,
    rss_trend,
    summary,
)


def test_percentile_interpolates_between_closest_ranks_like_numpy():
    data = [15, 20, 35, 40, 50]
    assert percentile(data, 0) == 15
    assert percentile(data, 100) == 50
    assert percentile(data, 50) == 35
    assert percentile(data, 40) == pytest.approx(29.0)  # numpy.percentile(data, 40)
    assert percentile(data, 99) == pytest.approx(49.6)
    assert percentile(reversed(data), 50) == 35  # order of the input does not matter


def test_percentile_of_nothing_is_none_and_of_one_value_is_that_value():
    assert percentile([], 50) is None
    assert percentile([7.5], 99) == 7.5
    with pytest.raises(ValueError):
        percentile([1, 2], 101)


def test_summary_scales_and_rounds():
    s = summary([0.010, 0.020, 0.030], scale=1000)
    assert s == {"count": 3, "p50": 20.0, "p90": 28.0, "p99": 29.8, "max": 30.0, "mean": 20.0}
    assert summary([])["p99"] is None


def test_stat_cpu_counts_fields_after_the_last_parenthesis():
    # a command name with spaces and a ')' in it must not shift the fields
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    text = "1234 (my (odd) name) " + " ".join(fields)
    assert parse_stat_cpu(text, clk_tck=100) == pytest.approx(3.0)


def test_status_lines_in_kib():
    text = "Name:\tpython\nVmHWM:\t  81234 kB\nVmRSS:\t  80000 kB\n"
    assert parse_status_kib(text, "VmHWM") == 81234
    assert parse_status_kib(text, "VmRSS") == 80000
    assert parse_status_kib(text, "VmSwap") is None


def test_this_process_cpu_and_memory_from_proc():
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) >= before + 0.03
    mem = memory_kib(os.getpid())
    assert mem["rss"] > 1000 and mem["hwm"] >= mem["rss"]


def test_sampler_samples_rss_and_keeps_the_peak():
    sampler = ProcSampler(os.getpid(), interval=0.01).start()
    time.sleep(0.1)
    wall, cpu = sampler.mark()
    sampler.stop()
    assert len(sampler.samples) >= 3
    assert sampler.hwm_kib >= max(rss for _, _, rss in sampler.samples)
    assert cpu > 0 and wall <= time.time()


def test_sampler_of_a_process_that_is_gone_keeps_what_it_read():
    sampler = ProcSampler(2**22 + 12345, interval=0.01).start()  # no such pid
    sampler.stop()
    assert sampler.samples == []
    assert sampler.mark()[1] == 0.0


def test_rss_trend_slope_per_minute():
    flat = rss_trend([(t, 50 * 1024) for t in range(0, 60, 5)])
    assert flat["slope_mib_per_min"] == 0 and flat["min_mib"] == flat["max_mib"] == 50
    growing = rss_trend([(t, 50 * 1024 + t * 1024 // 6) for t in range(0, 60, 6)])  # 10 MiB/min
    assert growing["slope_mib_per_min"] == pytest.approx(10, abs=0.2)
    assert rss_trend([])["samples"] == 0
