"""Commands end to end: a real Mosquitto, a real Modbus TCP device, a real Gateway in process.

The platform's side is a plain paho client that knows only the topics: it publishes to
`pm/<site>/<gateway>/commands` and waits for `pm/<site>/<gateway>/replies/<id>`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from gateway_process import StaticDevice
from pymodbus.client import AsyncModbusTcpClient

from gateway import cli
from gateway.commands.audit import read_entries, verify
from gateway.config.loader import load_site
from gateway.daemon import Gateway

GATEWAY_ID = "gw-b1"
REPLY_TIMEOUT = 10.0  # a guard against hanging, not a measurement

PROFILE = """\
id: booster
name: 加压泵 booster pump
system: water_supply
points:
  setpoint: {table: holding, address: 0, type: uint16, scale: 0.001, min: 0.1, max: 1.0,
             writable: true, unit: MPa, name: 压力设定}
  temperature: {table: holding, address: 1, type: int16, scale: 0.1, unit: °C}
"""


def _device_entry(device_id: str, port: int) -> str:
    return f"""  - id: {device_id}
    profile: booster
    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {port}, unit: 1, timeout: 500ms}}
    poll_interval: 200ms
"""


def write_site(root: Path, site_id: str, broker_port: int, devices: dict[str, int]) -> Path:
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    (root / "profiles" / "booster.yaml").write_text(PROFILE, encoding="utf-8")
    entries = "".join(_device_entry(d, port) for d, port in devices.items())
    (root / "devices" / "pumps.yaml").write_text("devices:\n" + entries, encoding="utf-8")
    (root / "site.yaml").write_text(
        f"""\
site: {{id: {site_id}, name: 测试小区 command estate}}
data_dir: data
outbox: {{flush_interval: 100ms}}
upstream:
  host: 127.0.0.1
  port: {broker_port}
  gateway_id: {GATEWAY_ID}
""",
        encoding="utf-8",
    )
    return root / "site.yaml"


class Platform:
    """The monitoring centre's client: sends commands, collects the replies by id."""

    def __init__(self, port: int, base: str) -> None:
        self.base = base
        self.loop = asyncio.get_running_loop()
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subscribed = asyncio.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"platform-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{base}/replies/+", qos=1)
        self.client.on_subscribe = lambda *a: self.loop.call_soon_threadsafe(self._subscribed.set)
        self.client.on_message = lambda c, u, m: self.loop.call_soon_threadsafe(
            self._reply, m.topic, bytes(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _reply(self, topic: str, payload: bytes) -> None:
        request_id = topic.rsplit("/", 1)[-1]
        future = self.replies.setdefault(request_id, self.loop.create_future())
        if not future.done():
            future.set_result(json.loads(payload))

    async def send(self, payload: bytes | dict[str, Any], request_id: str | None = None,
                   timeout: float = REPLY_TIMEOUT) -> dict[str, Any] | None:
        """Publish a command; its reply, or None when `request_id` is None (none expected)."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)
        if isinstance(payload, dict):
            request_id = payload.get("id", request_id)
            payload = json.dumps(payload).encode()
        if request_id is not None:
            self.replies.setdefault(request_id, self.loop.create_future())
        self.client.publish(f"{self.base}/commands", payload, qos=1).wait_for_publish(timeout)
        if request_id is None:
            return None
        return await asyncio.wait_for(self.replies[request_id], timeout)

    async def until_gateway_listens(self, device: str = "pump_1") -> None:
        """Ask for a device status until one is answered: the gateway has subscribed."""
        for attempt in range(100):
            try:
                await self.send({"id": f"hello-{attempt}", "type": "device_status",
                                 "device": device}, timeout=0.3)
                return
            except TimeoutError:
                continue
        raise AssertionError("the gateway never answered a command")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Site:
    gateway: Gateway
    platform: Platform
    path: Path
    data_dir: Path
    device: StaticDevice


@asynccontextmanager
async def running_site(tmp_path: Path, mosquitto: Any, free_port: int) -> AsyncIterator[Site]:
    site_id = f"c{uuid.uuid4().hex[:10]}"
    path = write_site(tmp_path / "site", site_id, mosquitto.port, {"pump_1": free_port})
    data_dir = tmp_path / "data"
    with StaticDevice(free_port) as device:
        gateway = Gateway(load_site(path), data_dir=data_dir)
        await gateway.start()
        platform = Platform(mosquitto.port, f"pm/{site_id}/{GATEWAY_ID}")
        try:
            await platform.until_gateway_listens()
            yield Site(gateway, platform, path, data_dir, device)
        finally:
            platform.close()
            await gateway.stop(budget=2.0)


async def read_holding(port: int, address: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        response = await client.read_holding_registers(address, count=1, device_id=1)
        assert not response.isError(), response
        return response.registers[0]
    finally:
        client.close()


def _outcomes(data_dir: Path) -> dict[str | None, tuple[str, str | None]]:
    return {e["id"]: (e["outcome"], e["reason"]) for e in read_entries(data_dir / "audit.jsonl")}


async def test_a_write_lands_on_the_device_and_every_refusal_is_answered_and_audited(
    tmp_path: Path, mosquitto: Any, free_port: int
) -> None:
    async with running_site(tmp_path, mosquitto, free_port) as site:
        send = site.platform.send
        ok = await send({"id": "w-ok", "type": "write", "device": "pump_1", "point": "setpoint",
                         "value": 0.6, "by": "监控中心 王工"})
        assert ok is not None and ok["ok"] is True, ok
        assert ok["result"] == {"device": "pump_1", "point": "setpoint", "value": 0.6}
        assert await read_holding(free_port, 0) == 600  # 0.6 MPa at scale 0.001

        refusals = {
            "w-ro": ({"point": "temperature", "value": 20}, "not writable"),
            "w-range": ({"point": "setpoint", "value": 1.6}, "outside the allowed range"),
            "w-dev": ({"device": "pump_9", "point": "setpoint", "value": 0.5},
                      "unknown device 'pump_9'"),
            "w-field": ({"point": "setpoint", "value": 0.5, "colour": "red"},
                        "unknown field 'colour'"),
        }
        for request_id, (fields, reason) in refusals.items():
            body = {"id": request_id, "type": "write", "device": "pump_1", **fields}
            reply = await send(body)
            assert reply is not None and reply["ok"] is False and reason in reply["error"], reply
        truncated = await send(b'{"id": "w-json", "type": "write", "device": "pu', "w-json")
        assert truncated is not None and "not JSON" in truncated["error"]
        await send(b"\x00 not even text")  # no id: nobody to answer, still audited
        # the refused writes changed nothing on the device
        assert await read_holding(free_port, 0) == 600
        assert await read_holding(free_port, 1) == 0xFFCC
        # the audit line is fsynced before the reply, so the replies above are all in it
        await send({"id": "w-last", "type": "device_status", "device": "pump_1"})

    outcomes = _outcomes(site.data_dir)
    assert outcomes["w-ok"] == ("accepted", None)
    for request_id, (_fields, reason) in refusals.items():
        assert outcomes[request_id][0] == "refused" and reason in outcomes[request_id][1]
    assert outcomes["w-json"][0] == "refused"
    assert outcomes[None][0] == "refused" and "not" in outcomes[None][1]
    written = next(e for e in read_entries(site.data_dir / "audit.jsonl") if e["id"] == "w-ok")
    assert (written["who"], written["target"], written["value"]) == (
        "监控中心 王工", "pump_1.setpoint", 0.6)
    assert verify(site.data_dir / "audit.jsonl") == []
    assert cli.main(["audit", "--verify", "--data-dir", str(site.data_dir)]) == 0


async def test_device_status_answers_with_the_devices_health_and_request_statistics(
    tmp_path: Path, mosquitto: Any, free_port: int
) -> None:
    async with running_site(tmp_path, mosquitto, free_port) as site:
        while site.gateway.health["pump_1"].online is not True:
            await asyncio.sleep(0.05)
        reply = await site.platform.send({"id": "s-1", "type": "device_status", "device": "pump_1"})
        assert reply is not None and reply["ok"] is True, reply
        result = reply["result"]
        assert result["device"] == "pump_1" and result["online"] is True
        assert result["polls"] >= 1 and result["last_good"] is not None
        assert result["requests"]["requests"] >= 1  # the Modbus driver's own counters
        unknown = await site.platform.send({"id": "s-2", "type": "device_status", "device": "x"})
        assert unknown is not None and unknown["ok"] is False
    assert _outcomes(site.data_dir)["s-1"] == ("accepted", None)


async def test_a_broken_reload_is_refused_with_located_errors_and_a_valid_one_is_applied(
    tmp_path: Path, mosquitto: Any, free_port: int
) -> None:
    async with running_site(tmp_path, mosquitto, free_port) as site:
        devices = site.path.parent / "devices" / "pumps.yaml"
        good = devices.read_text(encoding="utf-8")
        devices.write_text(good + "  - id: pump_2\n    profile: no_such_profile\n"
                           "    connection: {type: modbus_tcp, host: 127.0.0.1, port: 70000}\n",
                           encoding="utf-8")
        broken = await site.platform.send({"id": "r-bad", "type": "reload", "by": "ops"})
        assert broken is not None and broken["ok"] is False, broken
        errors = broken["result"]["errors"]
        assert any("pumps.yaml:" in e and "no_such_profile" in e for e in errors), errors
        assert any("pumps.yaml:" in e and "port" in e for e in errors), errors
        # still running the old configuration
        assert [d.device.id for d in site.gateway.drivers] == ["pump_1"]
        still = await site.platform.send({"id": "r-alive", "type": "device_status",
                                          "device": "pump_1"})
        assert still is not None and still["ok"] is True

        upstream = next(r.sink for r in site.gateway.runners if r.name == "upstream")
        hash_before = upstream.info.config_hash
        devices.write_text(good + _device_entry("pump_2", free_port), encoding="utf-8")
        applied = await site.platform.send({"id": "r-good", "type": "reload", "by": "ops"})
        assert applied is not None and applied["ok"] is True, applied
        # the birth is published again with the reloaded configuration's hash
        assert upstream.info.config_hash not in (None, hash_before)
        assert applied["result"]["added"] == ["pump_2"] and applied["result"]["restart_needed"] == []
        assert sorted(d.device.id for d in site.gateway.drivers) == ["pump_1", "pump_2"]
        while site.gateway.health["pump_2"].online is not True:  # the new device is polled
            await asyncio.sleep(0.05)
        write = await site.platform.send({"id": "r-write", "type": "write", "device": "pump_2",
                                          "point": "setpoint", "value": 0.25})
        assert write is not None and write["ok"] is True, write
        assert await read_holding(free_port, 0) == 250

    outcomes = _outcomes(site.data_dir)
    assert outcomes["r-bad"][0] == "refused" and "no_such_profile" in outcomes["r-bad"][1]
    assert outcomes["r-good"] == ("accepted", None)
    assert verify(site.data_dir / "audit.jsonl") == []
