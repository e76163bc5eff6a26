"""Commands authorised per kind over a real Mosquitto whose ACL gives each platform user
one command topic, named after itself (`pattern write pm/+/+/commands/%u`): the gateway
takes the sender from the topic, serves what `upstream.commands.allow` lets that sender do,
refuses and audits the rest, and never hears a command one user sent in another's name."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import services
from gateway_process import StaticDevice
from pymodbus.client import AsyncModbusTcpClient

from gateway.commands.audit import read_entries, verify
from gateway.config.loader import load_site
from gateway.daemon import Gateway

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
GATEWAY_USER = "gw-b1"
USERS = {GATEWAY_USER: f"gw-{RUN}", "platform-ops": f"ops-{RUN}", "monitoring": f"mon-{RUN}",
         "legacy": f"legacy-{RUN}"}
ACL = """\
pattern write pm/+/+/commands/%u
user gw-b1
topic readwrite pm/#
user platform-ops
topic read pm/+/+/replies/#
user monitoring
topic read pm/+/+/replies/#
user legacy
topic read pm/+/+/replies/#
topic write pm/+/+/commands
"""
REPLY_TIMEOUT = 10.0  # a guard against hanging, not a measurement

PROFILE = """\
id: booster
name: 加压泵 booster pump
system: water_supply
points:
  setpoint: {table: holding, address: 0, type: uint16, scale: 0.001, min: 0.1, max: 1.0,
             writable: true, unit: MPa}
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    workdir = tmp_path_factory.mktemp("mosquitto-acl")
    svc = services.start_mosquitto(workdir, accounts=services.mosquitto_accounts(workdir, USERS, ACL))
    try:
        yield svc
    finally:
        svc.stop()


def write_site(root: Path, site_id: str, broker_port: int, device_port: int) -> Path:
    (root / "profiles").mkdir(parents=True)
    (root / "devices").mkdir()
    (root / "profiles" / "booster.yaml").write_text(PROFILE, encoding="utf-8")
    (root / "devices" / "pumps.yaml").write_text(f"""\
devices:
  - id: pump_1
    profile: booster
    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {device_port}, timeout: 500ms}}
    poll_interval: 200ms
""", encoding="utf-8")
    (root / "site.yaml").write_text(f"""\
site: {{id: {site_id}, name: 测试小区 ACL estate}}
data_dir: data
outbox: {{flush_interval: 100ms}}
upstream:
  host: 127.0.0.1
  port: {broker_port}
  gateway_id: b1
  username: {GATEWAY_USER}
  password: {{env: GW_ACL_TEST_PASSWORD}}
  commands:
    allow:
      write: [platform-ops]
      status: [platform-ops, monitoring]
      ack: [monitoring, platform-ops]
""", encoding="utf-8")
    return root / "site.yaml"


class Operator:
    """One platform user's client: publishes on a commands topic, collects replies by id."""

    def __init__(self, port: int, user: str, base: str) -> None:
        self.base = base
        self.loop = asyncio.get_running_loop()
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subscribed = asyncio.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{RUN}")
        self.client.username_pw_set(user, USERS[user])
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{base}/replies/+", qos=1)
        self.client.on_subscribe = lambda *a: self.loop.call_soon_threadsafe(self._subscribed.set)
        self.client.on_message = lambda c, u, m: self.loop.call_soon_threadsafe(
            self._reply, json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _reply(self, body: dict[str, Any]) -> None:
        future = self.replies.setdefault(body["id"], self.loop.create_future())
        if not future.done():
            future.set_result(body)

    async def send(self, body: dict[str, Any], topic: str) -> asyncio.Future[dict[str, Any]]:
        """Publish on `<base>/<topic>`; the future of its reply."""
        await asyncio.wait_for(self._subscribed.wait(), REPLY_TIMEOUT)
        future = self.replies.setdefault(body["id"], self.loop.create_future())
        info = self.client.publish(f"{self.base}/{topic}", json.dumps(body), qos=1)
        await asyncio.to_thread(info.wait_for_publish, REPLY_TIMEOUT)
        return future

    async def ask(self, body: dict[str, Any], topic: str) -> dict[str, Any]:
        return await asyncio.wait_for(await self.send(body, topic), REPLY_TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _setpoint(port: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        response = await client.read_holding_registers(0, count=1, device_id=1)
        assert not response.isError(), response
        return response.registers[0]
    finally:
        client.close()


async def test_each_platform_user_commands_only_what_its_list_allows(
    tmp_path: Path, broker: services.Service, free_port: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GW_ACL_TEST_PASSWORD", USERS[GATEWAY_USER])
    site_id = f"acl{RUN}"
    base = f"pm/{site_id}/b1"
    data_dir = tmp_path / "data"
    path = write_site(tmp_path / "site", site_id, broker.port, free_port)
    with StaticDevice(free_port):
        gateway = Gateway(load_site(path), data_dir=data_dir)
        await gateway.start()
        ops = Operator(broker.port, "platform-ops", base)
        monitoring = Operator(broker.port, "monitoring", base)
        legacy = Operator(broker.port, "legacy", base)
        try:
            status = {"type": "device_status", "device": "pump_1"}
            for attempt in range(100):  # until the gateway has subscribed
                try:
                    await asyncio.wait_for(
                        await ops.send({"id": f"hello-{attempt}", **status},
                                       "commands/platform-ops"), 0.3)
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("the gateway never answered on its commands topic")
            write = {"type": "write", "device": "pump_1", "point": "setpoint"}

            done = await ops.ask({"id": "w-ops", **write, "value": 0.6}, "commands/platform-ops")
            assert done["ok"] is True, done
            assert await _setpoint(free_port) == 600

            denied = await monitoring.ask({"id": "w-mon", **write, "value": 0.2},
                                          "commands/monitoring")
            assert denied["ok"] is False
            assert denied["error"] == ("mqtt:monitoring may not send write commands: not listed "
                                       "in upstream.commands.allow.write")

            seen = await monitoring.ask({"id": "s-mon", **status}, "commands/monitoring")
            assert seen["ok"] is True and seen["result"]["device"] == "pump_1"

            # monitoring writes in platform-ops' name: the broker's ACL drops it unheard
            spoofed = await monitoring.send({"id": "w-spoof", **write, "value": 0.3},
                                            "commands/platform-ops")
            # later on the same connection, so the broker handled the spoof before it
            after = await monitoring.ask({"id": "s-after", **status}, "commands/monitoring")
            assert after["ok"] is True and not spoofed.done()

            # the plain topic names no sender: refused once senders are listed
            plain = await legacy.ask({"id": "w-plain", **write, "value": 0.4, "by": "platform-ops"},
                                     "commands")
            assert plain["ok"] is False
            assert f"must be sent on {base}/commands/<your MQTT user>" in plain["error"]
            assert await _setpoint(free_port) == 600  # only platform-ops' write landed
        finally:
            for operator in (ops, monitoring, legacy):
                operator.close()
            await gateway.stop(budget=2.0)

    entries = {e["id"]: e for e in read_entries(data_dir / "audit.jsonl")}
    assert (entries["w-ops"]["outcome"], entries["w-ops"]["via"]) == ("accepted", "mqtt:platform-ops")
    refused = entries["w-mon"]
    assert (refused["outcome"], refused["via"], refused["target"], refused["value"]) == (
        "refused", "mqtt:monitoring", "pump_1.setpoint", 0.2)
    assert refused["reason"] == denied["error"]
    assert entries["s-mon"]["outcome"] == "accepted"
    assert "w-spoof" not in entries  # never reached the gateway
    plain_entry = entries["w-plain"]
    assert (plain_entry["outcome"], plain_entry["via"], plain_entry["who"]) == (
        "refused", GATEWAY_USER, "platform-ops")  # `by` is kept, but decided nothing
    assert verify(data_dir / "audit.jsonl") == []
