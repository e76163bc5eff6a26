"""Guard patrols end to end: the example site's patrol readers publish swipes to a real
Mosquitto, the gateway (in process, the shipped profile and plan) reads them as visits,
judges the round at its end and, for the checkpoint the guard skipped, raises the alarm a
plain MQTT subscriber sees retained; compliance drops, reaches InfluxDB, and all of it
survives a restart, including a round that ended while the gateway was down.

The gateway runs on a clock the test moves (`Gateway(clock=)`), so a four-hour round ends
when the test says; each swipe carries its time in the payload (`timestamp_path: $.time`)
as the real readers do, so a swipe published again is the same visit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from test_commands import Platform
from upstream_tools import Contract, Message, Recorder

from gateway.config.loader import load_site
from gateway.config.models import InfluxSinkConfig, MqttSinkConfig, SiteConfig
from gateway.daemon import Gateway
from gateway.patrol import read_compliance

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from services import influx1_create_db, influx1_query  # noqa: E402

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
GATEWAY_ID = "gw-patrol"
WAIT = 20.0  # a guard against hanging, not a measurement
ZHANG = "5B21C0D4"  # guard_zhang's card in config/site.yaml
READERS = {"b1_pump_room": "patrol_b1_pump", "power_room": "patrol_power_room",
           "roof_tank": "patrol_roof_tank"}
ROOF_ALARM = "patrol.plant_rooms.roof_tank"


def at(hour: int, minute: int = 0, second: int = 0) -> float:
    """A moment of Monday 23 November 2026 on site."""
    return datetime(2026, 11, 23, hour, minute, second, tzinfo=SHANGHAI).timestamp()


def patrol_site(data_dir: Path, mosquitto: Any, influxdb1: Any, database: str, site_id: str,
                prefix: str) -> SiteConfig:
    """config/site.yaml with its patrol readers on the test broker under `prefix` (the
    other devices disabled, as a site engineer would), upstream to the same broker and an
    InfluxDB 1.x sink."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = []
    for device in config.devices:
        if device.id in READERS.values():
            base = device.connection.base_topic.replace("estate/demo", prefix, 1)
            connection = device.connection.model_copy(update={"port": mosquitto.port, "base_topic": base})
            devices.append(device.model_copy(update={"connection": connection}))
        else:
            devices.append(device.model_copy(update={"enabled": False}))
    return config.model_copy(update={
        "devices": devices, "data_dir": data_dir,
        "site": config.site.model_copy(update={"id": site_id}),
        "upstream": MqttSinkConfig(type="mqtt", host="127.0.0.1", port=mosquitto.port,
                                   gateway_id=GATEWAY_ID),
        "sinks": [InfluxSinkConfig(type="influxdb", name="influx", url=influxdb1.url, api="v1",
                                   database=database, flush_interval=0.2)],
        "outbox": config.outbox.model_copy(update={"flush_interval": 0.05}),
    })


class Readers:
    """The checkpoints' card readers: a paho client publishing swipes as the profile says."""

    def __init__(self, port: int, config: SiteConfig) -> None:
        self.bases = {d.id: d.connection.base_topic for d in config.devices if d.id in READERS.values()}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"readers-{uuid.uuid4().hex[:8]}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.seq = 0

    def swipe(self, checkpoint: str, card: str, ts: float) -> None:
        self.seq += 1
        payload = {"time": datetime.fromtimestamp(ts, SHANGHAI).isoformat(timespec="milliseconds"),
                   "seq": self.seq, "event": "patrol", "card": {"no": card}, "reader": checkpoint}
        topic = f"{self.bases[READERS[checkpoint]]}/events/patrol"
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def eventually(check: Callable[[], Any], what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not (result := check()):
        if loop.time() > deadline:
            pytest.fail(f"never saw {what}")
        await asyncio.sleep(0.05)
    return result


async def visit(gateway: Gateway, readers: Readers, checkpoint: str, card: str, ts: float) -> None:
    """A swipe the gateway has counted. Published again until it is (the driver may not
    have subscribed yet); the reader's own time makes a repeat the same visit."""
    before = gateway.edge.patrol.stats().get("visits", 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while gateway.edge.patrol.stats().get("visits", 0) == before:
        if loop.time() > deadline:
            pytest.fail(f"the gateway never counted the visit to {checkpoint}")
        readers.swipe(checkpoint, card, ts)
        await asyncio.sleep(0.3)


def on(recorder: Recorder, topic: str) -> list[Message]:
    return [m for m in recorder.on("") if m.topic == topic]


def latest_state(recorder: Recorder, topic: str) -> dict[str, Any] | None:
    mine = on(recorder, topic)
    return mine[-1].body if mine and mine[-1].payload else None


def retained_alarms(mosquitto: Any, base: str) -> dict[str, dict[str, Any]]:
    """What a platform that subscribes now to alarms/+ is given: the open alarms by id.
    A marker published after subscribing arrives after every retained message."""
    recorder = Recorder(mosquitto.host, mosquitto.port, f"{base}/#")
    try:
        marker = f"{base}/test/marker"
        recorder.client.publish(marker, b"end of retained", qos=1)
        messages = recorder.wait(lambda ms: any(m.topic == marker for m in ms), WAIT, "the marker")
    finally:
        recorder.close()
    return {m.body["alarm"]: m.body for m in messages if "/alarms/" in m.topic and m.retain}


def rounds(recorder: Recorder, base: str) -> list[dict[str, Any]]:
    return [m.body for m in on(recorder, f"{base}/events/patrol_round")]


def kpi_rows(influxdb1: Any, database: str) -> list[dict[str, Any]]:
    result = influx1_query(influxdb1, database, "SELECT * FROM readings WHERE device = "
                           "'patrol.plant_rooms' AND point = 'round_visited'", epoch="s")
    rows = []
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            rows += [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]
    return rows


async def test_a_skipped_checkpoint_raises_an_alarm_retained_upstream_and_lowers_compliance(
    tmp_path: Path, mosquitto: Any, influxdb1: Any
) -> None:
    site_id = f"p{uuid.uuid4().hex[:10]}"
    database = f"patrol_{uuid.uuid4().hex[:8]}"
    influx1_create_db(influxdb1, database)
    config = patrol_site(tmp_path / "data", mosquitto, influxdb1, database, site_id,
                         f"test-{uuid.uuid4().hex[:8]}")
    base = f"pm/{site_id}/{GATEWAY_ID}"
    roof_topic = f"{base}/alarms/{ROOF_ALARM}"
    contract = Contract()
    clock = {"now": at(7, 59, 50)}
    recorder = Recorder("127.0.0.1", mosquitto.port, f"{base}/#")
    readers = Readers(mosquitto.port, config)
    gateway = Gateway(config, clock=lambda: clock["now"])
    await gateway.start()
    try:
        # round 1 (08:00-12:00): the guard swipes at the pump room and the power room only
        clock["now"] = at(8, 40)
        await visit(gateway, readers, "b1_pump_room", ZHANG, at(8, 30))
        await visit(gateway, readers, "power_room", ZHANG, at(8, 36))
        clock["now"] = at(12, 0, 2)

        alarm = await eventually(lambda: latest_state(recorder, roof_topic), "the roof alarm retained")
        assert alarm["state"] == "active_unacknowledged" and alarm["device"] == "patrol_roof_tank"
        assert retained_alarms(mosquitto, base)[ROOF_ALARM]["state"] == "active_unacknowledged"
        [judged] = await eventually(lambda: rounds(recorder, base), "the round judged")
        assert (judged["round"], judged["missed"]) == (1, ["roof_tank"])
        assert [v["guard"] for v in judged["visited"]] == ["guard_zhang", "guard_zhang"]
        day = gateway.edge.patrol.compliance(at(0), at(23, 59))
        assert [(e["checkpoints_visited"], e["checkpoints_expected"]) for e in day] == [(2, 3)]
        assert day[0]["rate"] == pytest.approx(2 / 3)
        await gateway.stop(budget=2.0)

        # down from 12:00 to 16:00: round 2 ends meanwhile and is judged when it starts again
        clock["now"] = at(16, 0, 5)
        gateway = Gateway(config, clock=lambda: clock["now"])
        await gateway.start()
        assert gateway.rules.alarm(ROOF_ALARM)["state"] == "active_unacknowledged"  # restored
        await eventually(lambda: len(rounds(recorder, base)) == 2, "round 2 judged at start")
        assert rounds(recorder, base)[1]["missed"] == ["b1_pump_room", "power_room", "roof_tank"]
        pump = await eventually(lambda: latest_state(recorder, f"{base}/alarms/patrol.plant_rooms.b1_pump_room"),
                                "the pump room alarm")
        assert pump["state"] == "active_unacknowledged"
        day = gateway.edge.patrol.compliance(at(0), at(23, 59))
        assert (day[0]["rounds_expected"], day[0]["rounds_done"], day[0]["checkpoints_visited"],
                day[0]["checkpoints_expected"]) == (2, 0, 2, 6)

        # the guard is sent up to the roof: the alarm returns; the monitoring centre acks it
        clock["now"] = at(16, 20)
        await visit(gateway, readers, "roof_tank", ZHANG, at(16, 12))
        returned = await eventually(
            lambda: (s := latest_state(recorder, roof_topic)) and s["state"] == "returned_unacknowledged" and s,
            "the roof alarm returned")
        assert returned["active"] is False
        platform = Platform(mosquitto.port, base)
        try:
            reply = await platform.send({"id": "ack-roof", "type": "ack_alarm", "alarm": ROOF_ALARM,
                                         "by": "监控中心 刘工"})
        finally:
            platform.close()
        assert reply is not None and reply["ok"] is True, reply
        await eventually(lambda: on(recorder, roof_topic)[-1].payload == b"", "the closed alarm deleted")
        assert set(retained_alarms(mosquitto, base)) == {"patrol.plant_rooms.b1_pump_room",
                                                         "patrol.plant_rooms.power_room"}

        # compliance reached InfluxDB: one point per judged round, at the round's start
        rows = await eventually(lambda: len(kpi_rows(influxdb1, database)) >= 2 and kpi_rows(influxdb1, database),
                                "the patrol KPI in InfluxDB")
        assert [(row["time"], row["value"]) for row in rows] == [(at(8), 2), (at(12), 0)]

        for message in recorder.on(""):
            if message.payload and ("/alarms/" in message.topic or "/events/" in message.topic):
                contract.validate(message.topic, message.body)
    finally:
        await gateway.stop(budget=2.0)
        readers.close()
        recorder.close()

    # and from patrol.db alone, as the monthly report reads it
    [entry] = read_compliance(tmp_path / "data", at(0), at(23, 59))
    assert (entry["rounds_expected"], entry["checkpoints_visited"], entry["checkpoints_expected"]) == (2, 2, 6)
    assert [m["checkpoint"] for m in entry["missed"]] == ["roof_tank", "b1_pump_room", "power_room", "roof_tank"]
