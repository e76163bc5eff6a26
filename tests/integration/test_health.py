"""`gateway run`'s health: the /metrics endpoint scraped over HTTP, and systemd's notify
socket (READY, WATCHDOG, STATUS, RELOADING) received by the test itself."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest
from gateway_process import GatewayProcess, StaticDevice, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_reload import free_port, reloaded, status, write_site

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_metrics_endpoint_shows_devices_sinks_outbox_alarms_and_reloads(
    tmp_path: Path,
) -> None:
    metrics_port, live, dead = free_port(), free_port(), free_port()
    # pump_b answers (its alarm and ticket are active at once), pump_a's port has nobody;
    # the InfluxDB sink's peer is gone
    sinks = (f"sinks:\n  - {{type: influxdb, name: influx, url: 'http://127.0.0.1:{free_port()}',"
             f" bucket: b, timeout: 1s}}\n")
    site = write_site(tmp_path / "site", {"pump_a": dead, "pump_b": live},
                      metrics=f"metrics: {{listen: {metrics_port}}}\n", sinks=sinks)
    with StaticDevice(live):
        gateway = GatewayProcess(site, tmp_path / "data").start()
        try:
            def settled():
                now = status(gateway.data_dir)
                devices = now.get("devices") or {}
                sink = next(iter(now.get("sinks") or []), {})
                if (devices.get("pump_b", {}).get("online") is True
                        and devices.get("pump_a", {}).get("online") is False
                        and sink.get("oldest_unconfirmed_age", 0) >= 2):
                    return now
                return None

            now = wait_until(settled, 40, "pump_a offline and the sink behind")
            assert now["metrics"] == f"127.0.0.1:{metrics_port}"  # a bare port: localhost
            got = scrape(metrics_port)

            def value(name: str, **labels: str) -> float:
                return got[(name, tuple(sorted(labels.items())))]

            assert value("gateway_device_online", device="pump_b") == 1
            assert value("gateway_device_online", device="pump_a") == 0
            assert value("gateway_device_polls_total", device="pump_b", outcome="ok") > 0
            assert value("gateway_device_polls_total", device="pump_b", outcome="failed") == 0
            assert value("gateway_device_polls_total", device="pump_a", outcome="ok") == 0
            failed = value("gateway_device_polls_total", device="pump_a", outcome="failed")
            assert failed >= 3  # offline after three failed polls
            assert value("gateway_device_poll_errors_total", device="pump_a",
                         kind="comm_failure") == failed
            assert 0 < value("gateway_device_poll_latency_seconds", device="pump_b") < 10
            assert value("gateway_device_requests_total", device="pump_b") > 0
            # the influx sink has confirmed nothing: every record waits, the oldest for a while
            assert value("gateway_outbox_unconfirmed_records", sink="influx") > 0
            assert value("gateway_outbox_oldest_unconfirmed_age_seconds", sink="influx") >= 2
            assert value("gateway_sink_up", sink="influx") == 0
            assert value("gateway_sink_errors_total", sink="influx") >= 1
            assert value("gateway_sink_delivered_total", sink="influx") == 0
            assert value("gateway_outbox_records_total") >= value(
                "gateway_outbox_unconfirmed_records", sink="influx")
            # pump_b's high pressure: one alarm raised, one ticket open
            assert value("gateway_alarms", state="active_unacknowledged") == 1
            assert value("gateway_alarms", state="normal") == 0
            assert value("gateway_tickets_open") == 1
            assert value("gateway_rule_errors_total") == 0
            assert value("gateway_stage_errors_total") == 0
            assert value("gateway_healthy") == 0  # pump_a offline
            assert value("gateway_reloads_total", outcome="failed") == 0
            assert value("gateway_config_info", config_hash=now["reload"]["config_hash"]) == 1
            assert value("gateway_data_dir_free_bytes") > 0

            # a broken file: the failed reload is counted
            devices = site.parent / "devices" / "pumps.yaml"
            devices.write_text(devices.read_text(encoding="utf-8") + "  - id: [\n",
                               encoding="utf-8")
            gateway.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: reloaded(gateway.data_dir, failed=1), 30, "the failed reload")
            got = scrape(metrics_port)
            assert value("gateway_reloads_total", outcome="failed") == 1
            assert value("gateway_reloads_total", outcome="applied") == 0
        finally:
            gateway.stop_quietly()


class NotifySocket:
    """What systemd would receive on $NOTIFY_SOCKET, read as it arrives by a thread."""

    def __init__(self) -> None:
        # short: a Unix socket path is at most 107 bytes
        self.path = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp")) / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._open = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._open:
            try:
                self.messages.append(self.sock.recv(4096).decode("utf-8"))
            except TimeoutError:
                continue

    def collect(self) -> list[str]:
        return list(self.messages)

    def count(self, needle: str) -> int:
        return sum(needle in message for message in self.collect())

    def close(self) -> None:
        self._open = False
        self._reader.join(5)
        self.sock.close()
        self.path.unlink(missing_ok=True)
        os.rmdir(self.path.parent)


def test_ready_watchdog_status_and_reload_arrive_on_the_notify_socket(tmp_path: Path) -> None:
    live = free_port()
    notify = NotifySocket()
    site = write_site(tmp_path / "site", {"pump_a": live})
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}  # ping every 0.2 s
    with StaticDevice(live):
        gateway = GatewayProcess(site, tmp_path / "data", env=env).start()
        try:
            wait_until(lambda: notify.count("READY=1") >= 1, 30, "READY=1")
            wait_until(lambda: notify.count("WATCHDOG=1") >= 5, 30, "watchdog pings")
            wait_until(lambda: any(m.startswith("WATCHDOG=1\nSTATUS=OK") for m in notify.collect()),
                       30, "the health line in STATUS=")
            first = notify.collect().index("READY=1")
            pings = [i for i, m in enumerate(notify.collect()) if "WATCHDOG=1" in m]
            assert pings[0] > first  # the watchdog runs once the gateway is up

            gateway.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: reloaded(gateway.data_dir, applied=1), 30, "the reload")
            messages = notify.collect()
            reloading = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1"))
            assert "MONOTONIC_USEC=" in messages[reloading]
            assert "READY=1" in messages[reloading + 1:]
            before = notify.count("WATCHDOG=1")
            wait_until(lambda: notify.count("WATCHDOG=1") > before, 30, "pings after the reload")

            gateway.terminate()
            assert "STOPPING=1" in notify.collect()
            assert gateway.proc.returncode == 0, gateway.log_text()[-2000:]
        finally:
            gateway.stop_quietly()
            notify.close()
