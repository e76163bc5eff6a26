"""A site loads only the protocol stacks it uses: `gateway run` as a real process, run
until a poll has reached every sink (so every lazy import of start-up and of the first
poll has happened), stopped with SIGTERM; at exit it writes the modules it had loaded.

Not checked: pyserial. pymodbus's client package imports its serial client, which
imports pyserial, whatever the connection (about 0.2 MiB and a few ms; avoiding it
would mean patching pymodbus's internals).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from gateway_process import StaticDevice, cursors, wait_until, write_site

pytestmark = pytest.mark.integration

# What a Modbus TCP site with an MQTT upstream and no InfluxDB sink must not import.
NOT_FOR_MODBUS_ONLY = (
    "bacpypes3",  # BACnet
    "drivers.bacnet",
    "drivers.mqtt",  # MQTT devices (the upstream link is a sink, not this driver)
    "aiohttp",  # the InfluxDB sink's HTTP client
    "influxdb_client",
    "gateway.sinks.influx",
    "rich",  # structlog's optional pretty tracebacks (amqtt's CLI installs rich)
)

# `gateway run`, writing the modules loaded (imported and not failed) when it exits.
RUN_AND_LIST = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: json.dump(sorted(n for n, m in sys.modules.items() if m is not None),
                                  open(out, "w")))
sys.argv[0] = "gateway"
from gateway.cli import main
sys.exit(main())
"""


def loaded(modules: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


def run_until_delivered(tmp_path: Path, port: int, mosquitto, sinks: str = "") -> set[str]:
    """Run a one-device Modbus TCP site until its upstream has confirmed a reading (and
    every other sink one too), stop it and return the modules it had loaded."""
    site = write_site(
        tmp_path / "site", site_id=f"fp-{uuid.uuid4().hex[:8]}", devices={"pump": port},
        sinks=sinks,
        upstream=f"upstream:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  topic_prefix: pm\n",
    )
    data_dir, listing = tmp_path / "data", tmp_path / "modules.json"
    data_dir.mkdir()
    with StaticDevice(port), open(tmp_path / "gateway.log", "wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-c", RUN_AND_LIST, str(listing), "run", "-c", str(site),
             "--data-dir", str(data_dir), "--log-format", "json"],
            stdout=log, stderr=log,
        )
        try:
            wait_until(
                lambda: (found := cursors(data_dir)) and len(found) >= 2 and min(found.values()) > 0,
                30, "every sink to confirm a reading",
            )
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(10) == 0
        finally:
            if gateway.poll() is None:
                gateway.kill()
                gateway.wait(10)
    return set(json.loads(listing.read_text()))


def test_a_modbus_site_without_influxdb_loads_no_other_protocol_stack(tmp_path, free_port, mosquitto):
    modules = run_until_delivered(tmp_path, free_port, mosquitto)

    assert loaded(modules, "pymodbus") and loaded(modules, "paho")  # what it does use
    assert loaded(modules, "gateway.sinks.history")  # the local history it gets instead
    unexpected = [name for name in NOT_FOR_MODBUS_ONLY if loaded(modules, name)]
    assert unexpected == []


def test_an_influxdb_sink_loads_its_http_client(tmp_path, free_port, mosquitto, victoria):
    sinks = (
        "sinks:\n  - type: influxdb\n    name: central\n"
        f"    url: {victoria.url}\n    api: v2\n    org: estate\n    bucket: readings\n"
        "    flush_interval: 200ms\n"
    )
    modules = run_until_delivered(tmp_path, free_port, mosquitto, sinks)

    assert loaded(modules, "gateway.sinks.influx") and loaded(modules, "aiohttp")
    assert not loaded(modules, "bacpypes3") and not loaded(modules, "drivers.mqtt")
