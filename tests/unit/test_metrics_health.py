"""The health line and what feeds it (the commit clock behind a sink's lag), the metrics
endpoint's address and server, and the systemd notify helpers."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from gateway import sdnotify
from gateway.config.errors import ConfigError
from gateway.config.loader import load_site
from gateway.health import (
    BACKLOG_AGE_MAX,
    SINK_DOWN_AFTER,
    CommitClock,
    SiteFacts,
    health_line,
    judge,
)
from gateway.metrics import MetricsServer


def test_the_oldest_unconfirmed_record_is_as_old_as_the_mark_that_first_saw_it() -> None:
    clock = CommitClock()
    clock.mark(10, 1000.0)  # seq 10 committed by t=1000
    clock.mark(10, 1001.0)  # nothing new: no mark
    clock.mark(25, 1002.0)
    assert clock.committed_at(9) == 1000.0  # record 10 is the oldest a sink at 9 waits for
    assert clock.committed_at(10) == 1002.0
    assert clock.committed_at(25) is None  # nothing after 25 is known
    clock.forget(10)  # every sink is past 10
    assert clock.committed_at(0) == 1002.0


def test_a_long_outage_thins_old_marks_without_making_anything_younger() -> None:
    clock = CommitClock(max_marks=8)
    for second in range(100):
        clock.mark(second + 1, 1000.0 + second)
    assert len(clock._marks) <= 8
    assert clock.committed_at(0) == 1000.0  # the oldest mark is always kept
    ages = [clock.committed_at(seq) for seq in range(0, 100, 10)]
    assert ages == sorted(ages)  # later records were never committed earlier


def test_a_clock_step_back_does_not_make_newer_records_look_older() -> None:
    clock = CommitClock()
    clock.mark(1, 1000.0)
    clock.mark(2, 990.0)
    assert clock.committed_at(1) == 1000.0


def test_nothing_wrong_is_ok() -> None:
    assert judge(SiteFacts(disk_free=0.5, outbox_fill=0.1)) == {"state": "OK", "reasons": []}
    assert health_line({"state": "OK", "reasons": []}) == "OK"


def test_each_problem_is_a_reason_in_words() -> None:
    facts = SiteFacts(
        offline=[f"pump_{i}" for i in range(7)],
        sinks_down={"upstream": SINK_DOWN_AFTER + 60, "influx": SINK_DOWN_AFTER - 1},
        backlog={"upstream": (1240, BACKLOG_AGE_MAX + 600), "influx": (3, 1.0)},
        disk_free=0.03, outbox_fill=0.95, reload_failed_at=1_795_447_036.0,
    )
    health = judge(facts)
    reasons = health["reasons"]
    assert health["state"] == "DEGRADED" and len(reasons) == 6
    assert reasons[0] == "7 devices offline: pump_0, pump_1, pump_2, pump_3, pump_4 and 2 more"
    assert reasons[1] == "sink upstream down for 6 min"  # influx is not down long enough
    assert reasons[2] == "sink upstream: 1240 records waiting, the oldest 25 min"
    assert reasons[3] == "disk nearly full: 3% free for the data dir"
    assert "outbox at 95% of max_size" in reasons[4]
    assert reasons[5].startswith("reload failed at ") and "previous configuration" in reasons[5]
    assert health_line(health).startswith("DEGRADED: 7 devices offline")


def test_the_metrics_endpoint_listens_on_localhost_unless_a_host_is_written(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: s, name: n}\nmetrics: {listen: 9200}\n", encoding="utf-8")
    assert load_site(site).metrics.address == ("127.0.0.1", 9200)
    site.write_text("site: {id: s, name: n}\nmetrics: {}\n", encoding="utf-8")
    assert load_site(site).metrics.address == ("127.0.0.1", 9108)
    site.write_text("site: {id: s, name: n}\n", encoding="utf-8")
    assert load_site(site).metrics is None  # off by default
    site.write_text(textwrap.dedent("""\
        site: {id: s, name: n}
        metrics:
          listen: "10.0.0.5:http"
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    (issue,) = [str(i) for i in caught.value.issues]
    assert "site.yaml:3:" in issue and "127.0.0.1:9108" in issue  # where, and what would do


async def test_the_metrics_server_serves_its_registry_over_http() -> None:
    registry = CollectorRegistry()
    Counter("gateway_test_things", "Things counted.", registry=registry).inc(3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = MetricsServer(registry, "127.0.0.1", port)
    await server.start()
    try:
        def get() -> tuple[str, str]:
            with urllib.request.urlopen(f"http://{server.where}/metrics", timeout=5) as reply:
                return reply.headers["Content-Type"], reply.read().decode()

        kind, text = await asyncio.to_thread(get)
        assert kind.startswith("text/plain") and "gateway_test_things_total 3.0" in text
        with pytest.raises(OSError):  # the port is taken: the caller logs and runs on
            await MetricsServer(registry, "127.0.0.1", port).start()
    finally:
        await server.stop()


def test_the_watchdog_pings_at_half_the_period_systemd_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # systemd watches another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None


def test_a_notify_socket_nobody_reads_never_blocks_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = Path("/tmp") / f"sdn-{tmp_path.name[-12:]}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        try:
            monkeypatch.setenv("NOTIFY_SOCKET", str(path))
            sent = [sdnotify.notify("WATCHDOG=1") for _ in range(2000)]  # never read
            assert sent[0] is True and False in sent  # the full queue costs messages only
            assert listener.recv(100) == b"WATCHDOG=1"
        finally:
            path.unlink()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.notify("READY=1") is False  # outside systemd: nothing to do
