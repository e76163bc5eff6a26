"""SIGTERM ends within 5 s even with a device that never answers and every sink dead."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from gateway_process import GatewayProcess, wait_until, write_site

pytestmark = pytest.mark.integration


def test_sigterm_with_a_hung_device_and_dead_sinks_still_ends_within_five_seconds(tmp_path):
    # A TCP peer that accepts and never answers, and ports where nobody listens.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    sinks = f"""\
sinks:
  - {{type: influxdb, name: central, url: "http://127.0.0.1:{dead}", bucket: b, timeout: 5s}}
upstream:
  host: 127.0.0.1
  port: {dead}
"""
    site = write_site(tmp_path / "site", site_id=f"stop-{uuid.uuid4().hex[:6]}",
                      devices={"hung_1": hung.getsockname()[1]}, sinks=sinks,
                      poll_interval="1s")
    gateway = GatewayProcess(site, tmp_path / "data").start()
    try:
        wait_until(lambda: "gateway started" in gateway.log_text(), 20, "the gateway to start")
        time.sleep(2.0)  # polls are stuck on the hung device, sinks are retrying
        seconds = gateway.terminate(timeout=15)
        assert gateway.proc.returncode == 0, gateway.log_text()[-2000:]
        assert seconds < 5.0, f"took {seconds:.2f} s"
        print(f"\nSIGTERM to exit: {seconds:.2f} s")
    finally:
        gateway.stop_quietly()
        hung.close()
