"""The example site's rules end to end: the simulator plays a fault over real Modbus TCP, the
gateway (in process, with the shipped profiles and rules) raises the alarm and opens the
ticket, and a plain MQTT subscriber on a real Mosquitto sees what a monitoring centre sees.

The simulator's clock stands still (tick=3600) so only the fault changes the readings; the
gateway runs on wall-clock time, so SLA deadlines are checked against the ticket's own
`opened` time rather than against the test's clock.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_commands import Platform
from upstream_tools import Contract, Message, Recorder

from gateway.config.loader import load_site
from gateway.config.models import MqttSinkConfig, SiteConfig
from gateway.config.rule_models import MaintenanceTask, RuleFile
from gateway.daemon import Gateway

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from services import free_port  # noqa: E402
from simsite import SimulatedSite  # noqa: E402

pytestmark = pytest.mark.integration

GATEWAY_ID = "gw-rules"
WAIT = 20.0  # a guard against hanging, not a measurement
MORNING = datetime(2025, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
# The devices the fault scenarios play on, and their neighbours on the same simulator.
DEVICES = {"pump_b1_1", "lift_b1_1", "fire_panel_main", "sump_b1_1", "meter_b1_main"}


def rules_site(data_dir: Path, broker_port: int, site_id: str) -> SiteConfig:
    """config/site.yaml's Modbus devices on free ports, polled fast, with upstream to the broker."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = [
        device.model_copy(update={
            "connection": device.connection.model_copy(update={"port": free_port(), "timeout": 0.3}),
            "poll_interval": 0.2, "poll_groups": {g: 0.2 for g in device.poll_groups},
        })
        for device in config.devices if device.id in DEVICES
    ]
    upstream = MqttSinkConfig(type="mqtt", host="127.0.0.1", port=broker_port, gateway_id=GATEWAY_ID)
    # devices left out are disabled, as a site engineer would, so site rules on them rest
    devices += [d.model_copy(update={"enabled": False}) for d in config.devices if d.id not in DEVICES]
    return config.model_copy(update={
        "devices": devices, "upstream": upstream, "data_dir": data_dir,
        "site": config.site.model_copy(update={"id": site_id}),
        "outbox": config.outbox.model_copy(update={"flush_interval": 0.05}),
    })


@dataclass
class Site:
    sim: SimulatedSite
    gateway: Gateway
    recorder: Recorder
    platform: Platform
    base: str
    config: SiteConfig

    def retained_alarms(self, device: str) -> list[Message]:
        return [m for m in self.recorder.on("") if f"/alarms/{device}." in m.topic]

    async def until(self, predicate, what: str) -> list[Message]:
        return await asyncio.to_thread(self.recorder.wait, predicate, WAIT, what)

    async def alarm_state(self, alarm: str, state: str, **fields: Any) -> dict[str, Any]:
        """The latest published state of `alarm` once it is `state` (with `fields`)."""
        topic = f"{self.base}/alarms/{alarm}"

        def reached(messages: list[Message]) -> bool:
            mine = [m for m in messages if m.topic == topic and m.payload]
            return bool(mine) and mine[-1].body["state"] == state and all(
                mine[-1].body.get(k) == v for k, v in fields.items())
        messages = await self.until(reached, f"{alarm} {state}")
        return [m for m in messages if m.topic == topic and m.payload][-1].body

    async def ticket_for(self, device: str, fault: str) -> dict[str, Any]:
        def opened(messages: list[Message]) -> bool:
            return any(_is_ticket(m, device, fault) for m in messages)
        messages = await self.until(opened, f"a ticket for {device} {fault}")
        return [m for m in messages if _is_ticket(m, device, fault)][-1].body


def _is_ticket(message: Message, device: str, fault: str) -> bool:
    if "/tickets/" not in message.topic or not message.payload:
        return False
    body = message.body
    return body["device"] == device and body["fault"] == fault


@asynccontextmanager
async def running_site(tmp_path: Path, mosquitto: Any, *, site_id: str | None = None,
                       sim: SimulatedSite | None = None, rule_files: list[RuleFile] = (),
                       clock: Callable[[], float] = time.time,
                       listening: bool = True) -> AsyncIterator[Site]:
    """The gateway on a simulated site; with `listening`, once it takes commands."""
    site_id = site_id or f"r{uuid.uuid4().hex[:10]}"
    config = rules_site(tmp_path / "data", mosquitto.port, site_id)
    config = config.model_copy(update={"rule_files": [*config.rule_files, *rule_files]})
    own_sim = sim is None
    if sim is None:
        sim = SimulatedSite(config, seed=11, tick=3600, start=MORNING)
        await sim.start()
    base = f"pm/{site_id}/{GATEWAY_ID}"
    recorder = Recorder("127.0.0.1", mosquitto.port, f"{base}/#")
    gateway = Gateway(config, clock=clock)
    await gateway.start()
    platform = Platform(mosquitto.port, base)
    try:
        if listening:  # it subscribes once connected: a command sent before goes nowhere
            await platform.until_gateway_listens("pump_b1_1")
        yield Site(sim, gateway, recorder, platform, base, config)
    finally:
        platform.close()
        await gateway.stop(budget=2.0)
        recorder.close()
        if own_sim:
            await sim.stop()


def _minutes_between(opened: str, due: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(due) - parse(opened)).total_seconds() / 60


async def test_a_pump_trip_raises_its_alarm_and_an_urgent_water_ticket_and_an_ack_lands(
    tmp_path: Path, mosquitto: Any
) -> None:
    async with running_site(tmp_path, mosquitto) as site:
        await site.sim.set_fault("pump_b1_1", "pump_trip")
        alarm = await site.alarm_state("pump_b1_1.pump_trip", "active_unacknowledged")
        assert alarm["severity"] == "major" and alarm["device"] == "pump_b1_1"
        assert alarm["message"], alarm  # rendered from the template with the fault code

        ticket = await site.ticket_for("pump_b1_1", "pump_trip")
        assert ticket["priority"] == "urgent" and ticket["state"] == "open"
        assert _minutes_between(ticket["opened"], ticket["due"]) == pytest.approx(15, abs=0.01)

        reply = await site.platform.send({"id": "ack-1", "type": "ack_alarm",
                                          "alarm": "pump_b1_1.pump_trip", "by": "监控中心 王工"})
        assert reply is not None and reply["ok"] is True, reply
        acked = await site.alarm_state("pump_b1_1.pump_trip", "active_acknowledged")
        assert acked["acknowledged_by"] == "监控中心 王工"

        contract = Contract()
        for message in site.recorder.on(""):
            if message.payload and ("/alarms/" in message.topic or "/tickets/" in message.topic
                                    or "/events/alarm_event" in message.topic):
                contract.validate(message.topic, message.body)


async def test_passengers_trapped_in_a_stuck_lift_raise_a_critical_alarm_and_a_rescue_ticket(
    tmp_path: Path, mosquitto: Any
) -> None:
    async with running_site(tmp_path, mosquitto) as site:
        await site.sim.set_fault("lift_b1_1", "elevator_stuck")
        alarm = await site.alarm_state("lift_b1_1.passengers_trapped", "active_unacknowledged")
        assert alarm["severity"] == "critical"
        ticket = await site.ticket_for("lift_b1_1", "passengers_trapped")
        assert ticket["priority"] == "urgent" and ticket["grade"] == "major"
        # the maintenance company's rescuer: 30 minutes in a city (TSG T5002-2017)
        assert _minutes_between(ticket["opened"], ticket["due"]) == pytest.approx(30, abs=0.01)


async def test_a_fire_alarm_is_critical_at_once_with_an_emergency_ticket(
    tmp_path: Path, mosquitto: Any
) -> None:
    async with running_site(tmp_path, mosquitto) as site:
        await site.sim.set_fault("fire_panel_main", "fire_alarm")
        alarm = await site.alarm_state("fire_panel_main.fire_alarm", "active_unacknowledged")
        assert alarm["severity"] == "critical"
        ticket = await site.ticket_for("fire_panel_main", "fire_alarm")
        assert ticket["category"] == "fire" and ticket["emergency_plan"] is True


async def test_a_restart_keeps_the_acknowledged_alarm_and_the_ticket_with_its_deadline(
    tmp_path: Path, mosquitto: Any
) -> None:
    site_id = f"r{uuid.uuid4().hex[:10]}"
    async with running_site(tmp_path, mosquitto, site_id=site_id) as site:
        sim = site.sim
        await sim.set_fault("pump_b1_1", "pump_trip")
        await site.alarm_state("pump_b1_1.pump_trip", "active_unacknowledged")
        before = await site.ticket_for("pump_b1_1", "pump_trip")
        reply = await site.platform.send({"id": "ack-r", "type": "ack_alarm",
                                          "alarm": "pump_b1_1.pump_trip", "by": "值班 李工"})
        assert reply is not None and reply["ok"], reply
        await site.alarm_state("pump_b1_1.pump_trip", "active_acknowledged")
        dispatch = await site.platform.send({
            "id": "t-1", "type": "update_ticket", "ticket": before["ticket"], "step": "dispatch",
            "owner": "维修 赵工", "by": "调度 王工"})
        assert dispatch is not None and dispatch["ok"], dispatch

    # looked at before the new simulator's first poll (its pump has no fault)
    async with running_site(tmp_path, mosquitto, site_id=site_id, listening=False) as site:
        alarm = site.gateway.rules.alarm("pump_b1_1.pump_trip")
        assert alarm["state"] == "active_acknowledged" and alarm["acknowledged_by"] == "值班 李工"
        (ticket,) = [t for t in site.gateway.rules.tickets() if t["ticket"] == before["ticket"]]
        assert ticket["state"] == "dispatched" and ticket["owner"] == "维修 赵工"
        assert ticket["due"] == before["due"]  # the arrival clock ran on from the same start
        assert ticket["count"] == 1  # the fault still present after the restart is the same job


async def test_a_maintenance_plan_due_while_the_gateway_was_down_is_raised_when_it_starts(
    tmp_path: Path, mosquitto: Any
) -> None:
    site_id = f"r{uuid.uuid4().hex[:10]}"
    plan = RuleFile(maintenance=[MaintenanceTask(
        task="lightning_test", title="防雷检测", category="lightning", every_days=365,
        asset="lightning_protection_b1")])
    started = time.time()
    async with running_site(tmp_path, mosquitto, site_id=site_id, rule_files=[plan]) as site:
        # first seen now: due a year from now, nothing to do yet
        assert not [t for t in site.gateway.rules.tickets() if t["fault"] == "lightning_test"]

    # the gateway is off for a year and a day; the plan fell due meanwhile
    later = started + 366 * 86400
    async with running_site(tmp_path, mosquitto, site_id=site_id, rule_files=[plan],
                            clock=lambda: later + (time.time() - started)) as site:
        ticket = await site.ticket_for("lightning_protection_b1", "lightning_test")
        assert ticket["kind"] == "preventive" and ticket["state"] == "open"
        assert ticket["title"] == "防雷检测"


async def test_a_device_in_maintenance_has_its_alarms_suppressed_and_says_so_upstream(
    tmp_path: Path, mosquitto: Any
) -> None:
    async with running_site(tmp_path, mosquitto) as site:
        status = f"{site.base}/status/pump_b1_1"
        reply = await site.platform.send({"id": "m-on", "type": "maintenance", "device": "pump_b1_1",
                                          "on": True, "for": "2h", "reason": "更换机械密封",
                                          "by": "李工"})
        assert reply is not None and reply["ok"], reply
        await site.until(lambda ms: any(m.topic == status and m.body.get("maintenance_until")
                                        for m in ms), "the device status in maintenance")
        assert site.recorder.on("/events/maintenance")[-1].body["maintenance"] is True

        # the engineer trips the drive while working on it: no alarm is announced, no ticket
        await site.sim.set_fault("pump_b1_1", "pump_trip")
        await site.alarm_state("pump_b1_1.pump_trip", "suppressed", active=True)
        assert not [t for t in site.gateway.rules.tickets() if t["device"] == "pump_b1_1"]

        reply = await site.platform.send({"id": "m-off", "type": "maintenance",
                                          "device": "pump_b1_1", "on": False, "by": "李工"})
        assert reply is not None and reply["ok"], reply
        # the fault outlived the maintenance: it is announced and needs acknowledging
        await site.alarm_state("pump_b1_1.pump_trip", "active_unacknowledged")
        last = [m for m in site.recorder.on("") if m.topic == status][-1]
        assert last.body["maintenance_until"] is None
