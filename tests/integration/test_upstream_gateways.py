"""Two gateways of one site on one broker: each under its own topics, wills independent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import pytest
from upstream_tools import CHILD_GATEWAY, ROOT, Recorder

pytestmark = pytest.mark.integration


def _start(mosquitto, site: str, gateway: str, device: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_GATEWAY, mosquitto.host, str(mosquitto.port), site,
         gateway, device],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )


async def _ready(child: subprocess.Popen) -> None:
    assert child.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
    assert line.strip() == b"ready"


async def test_two_gateways_publish_their_own_devices_and_only_the_killed_one_goes_offline(
    mosquitto,
):
    site = f"campus{uuid.uuid4().hex[:6]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    east = _start(mosquitto, site, "gw-east", "chiller_east")
    west = _start(mosquitto, site, "gw-west", "pump_west")
    try:
        await asyncio.gather(_ready(east), _ready(west))
        telemetry = {
            m.topic: m.body
            for m in recorder.wait(
                lambda ms: sum("/telemetry/" in m.topic for m in ms) >= 2, 10, "both telemetry"
            )
            if "/telemetry/" in m.topic
        }
        assert set(telemetry) == {
            f"pm/{site}/gw-east/telemetry/chiller_east", f"pm/{site}/gw-west/telemetry/pump_west",
        }
        assert {b["gateway"] for b in telemetry.values()} == {"gw-east", "gw-west"}

        east.send_signal(signal.SIGKILL)  # a power cut in the east building
        east.wait(5)
        recorder.wait(
            lambda ms: any(m.topic.endswith("gw-east/gateway/status") and m.body["state"] ==
                           "offline" for m in ms), 15, "the east gateway's will",
        )
        # What a platform connecting now sees, retained: east offline, west still online.
        late = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/+/gateway/status")
        states = {
            m.body["gateway"]: (m.body["state"], m.body["client_id"])
            for m in late.wait(lambda ms: len(ms) >= 2, 10, "both retained states")
        }
        late.close()
        assert states == {
            "gw-east": ("offline", f"{site}-gw-east"),
            "gw-west": ("online", f"{site}-gw-west"),
        }
        west_states = [m.body["state"] for m in recorder.on("gw-west/gateway/status")]
        assert west_states == ["online"]  # the east will touched nothing of the west
    finally:
        for child in (east, west):
            if child.poll() is None:
                child.kill()
                child.wait(5)
        recorder.close()
