"""Who may send which kind of command: `upstream.commands.allow`, the sender named by the
command's topic level (MQTT) or by the kernel (the control socket), refusals audited with
the reason and nothing of a refused command run."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_local_control import short_dir as socket_dir

from drivers.base import Driver, DriverError
from gateway.batch import Batch, Event
from gateway.commands import build_commands
from gateway.commands.access import KIND_OF, KINDS, Caller, CommandAccess, unix_caller
from gateway.commands.audit import AUDIT_FILE, AuditLog, read_entries, verify
from gateway.commands.handler import CommandHandler
from gateway.commands.local import CONTROL_SOCKET, LocalControl, request
from gateway.commands.models import COMMAND_TYPES
from gateway.config.models import CommandAllow, Device, Profile, SiteConfig
from gateway.health import DeviceHealth

TOPIC = "pm/estate/gw1/commands"
ALARM = "pump_1.low_pressure"
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
PROFILE = Profile.from_data({
    "id": "booster", "name": "加压泵", "system": "water_supply",
    "points": {"mode": {"address": 2, "writable": True}},
})
DEVICE = Device.model_validate({
    "id": "pump_1", "profile": "booster",
    "connection": {"type": "modbus_tcp", "host": "127.0.0.1", "port": 1502},
})

# One valid command of every type, so each kind is tried end to end.
COMMANDS: dict[str, dict[str, Any]] = {
    "write": {"device": "pump_1", "point": "mode", "value": 1},
    "device_status": {"device": "pump_1"},
    "reload": {},
    "ack_alarm": {"alarm": ALARM},
    "shelve_alarm": {"alarm": ALARM, "for": "1h"},
    "unshelve_alarm": {"alarm": ALARM},
    "alarm_service": {"alarm": ALARM, "in_service": False},
    "update_ticket": {"ticket": "T-1", "step": "arrive"},
    "maintenance": {"device": "pump_1", "on": True},
    "meter_reading": {"meter": "meter_1", "value": 12.5},
    "meter_replace": {"meter": "meter_1", "old_final": 99.0, "new_initial": 0.0},
    "meter_snapshot": {"household": "3-2-1201"},
}


class RecordingDriver(Driver):
    def __init__(self) -> None:
        super().__init__(DEVICE, PROFILE)
        self.writes: list[tuple[str, Any]] = []
        self.asked = 0  # device_status reads the statistics

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(PROFILE.points)

    async def read(self, group: str = "default") -> Batch:
        raise DriverError("not used", "comm_failure")

    async def write(self, point: str, value: Any) -> None:
        self.writes.append((point, value))

    def stats(self) -> dict[str, Any]:
        self.asked += 1
        return {"requests": 1}


class RecordingStage:
    """The rule engine and the energy stage as commands use them: every call recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "snapshot":
                return {"household": args[0], "meters": []}
            if name in ("alarm",):
                return {"alarm": args[0]}
            if name == "tickets":
                return []
            return []

        return call


class Pipeline:
    def emit_event(self, event: Event) -> None:
        pass

    def emit_measured(self, items: list[Batch | Event]) -> None:
        pass


class Target:
    def __init__(self) -> None:
        site = SiteConfig.model_validate({"site": {"id": "estate", "name": "测试小区"}})
        self.config = site.model_copy(update={
            "profiles": {"booster": PROFILE}, "devices": [DEVICE], "source": Path("/etc/site.yaml"),
        })
        self.driver = RecordingDriver()
        self.drivers: list[Driver] = [self.driver]
        self.health = {"pump_1": DeviceHealth("pump_1")}
        self.rules = RecordingStage()
        self.energy = RecordingStage()
        self.pipeline = Pipeline()
        self.reloaded = 0

    async def reload(self, config: SiteConfig) -> dict[str, object]:
        self.reloaded += 1
        return {"devices": 1, "added": [], "removed": [], "changed": [], "restart_needed": []}

    def touched(self) -> int:
        """How many things commands did: writes, engine and stage calls, reloads."""
        return (len(self.driver.writes) + self.driver.asked + len(self.rules.calls)
                + len(self.energy.calls) + self.reloaded)

    def status(self) -> dict[str, object]:
        return {"site": "estate"}


class Connection:
    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.published: list[tuple[str, bytes]] = []

    def subscribe(self, topic: str, handler: Any, qos: int = 1) -> None:
        self.subscribed.append(topic)

    async def publish_now(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        self.published.append((topic, payload))
        return True


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / AUDIT_FILE)
    log.open()
    yield log
    log.close()


def _handler(audit: AuditLog, allow: dict[str, list[str]] | None) -> tuple[CommandHandler, Target]:
    target = Target()
    access = CommandAccess(None if allow is None else CommandAllow(**allow), TOPIC)
    handler = CommandHandler(
        target, Connection(), audit, commands_topic=TOPIC,
        reply_topic=lambda request_id: f"pm/estate/gw1/replies/{request_id}",
        via="gw1-client", load=lambda path: target.config, access=access,
        clock=lambda: 1_700_000_000.0,
    )
    return handler, target


def _payload(kind: str, request_id: str, **extra: Any) -> bytes:
    return json.dumps({"id": request_id, "type": kind, **COMMANDS[kind], **extra}).encode()


# --- the allow lists --------------------------------------------------------------------


def test_every_command_type_belongs_to_a_kind_the_allow_list_names() -> None:
    assert set(KIND_OF) == set(COMMAND_TYPES)
    assert set(KIND_OF.values()) == set(KINDS) == set(CommandAllow.model_fields)


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
async def test_a_sender_listed_for_the_kind_is_served(audit: AuditLog, command_type: str) -> None:
    kind = KIND_OF[command_type]
    handler, target = _handler(audit, {kind: ["platform-ops"]})
    reply = await handler.handle(_payload(command_type, "ok-1"),
                                 caller=Caller("mqtt", "platform-ops"))
    assert reply is not None and reply.ok, reply
    assert target.touched() >= 1
    [entry] = read_entries(audit.path)
    assert (entry["outcome"], entry["via"], entry["type"]) == (
        "accepted", "mqtt:platform-ops", command_type)


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
async def test_a_sender_not_listed_for_the_kind_is_refused_audited_and_nothing_runs(
    audit: AuditLog, command_type: str
) -> None:
    kind = KIND_OF[command_type]
    others = {k: ["monitoring"] for k in KINDS if k != kind}  # every other kind, not this one
    handler, target = _handler(audit, {kind: ["platform-ops"], **others})
    reply = await handler.handle(_payload(command_type, "no-1", by="监控中心 刘工"),
                                 caller=Caller("mqtt", "monitoring"))
    assert reply is not None and not reply.ok
    assert reply.error == (f"mqtt:monitoring may not send {command_type} commands: "
                           f"not listed in upstream.commands.allow.{kind}")
    assert target.touched() == 0
    [entry] = read_entries(audit.path)
    assert entry["outcome"] == "refused"
    assert entry["reason"] == reply.error
    assert entry["via"] == "mqtt:monitoring"  # the sender the broker vouched for
    assert entry["who"] == "监控中心 刘工"  # what the payload says, kept but not trusted
    assert entry["type"] == command_type


async def test_the_monitoring_centre_acks_but_may_not_write(audit: AuditLog) -> None:
    handler, target = _handler(audit, {
        "write": ["platform-ops"], "ack": ["monitoring", "platform-ops"],
    })
    monitoring = Caller("mqtt", "monitoring")
    ack = await handler.handle(_payload("ack_alarm", "a1"), caller=monitoring)
    write = await handler.handle(_payload("write", "w1"), caller=monitoring)
    ops_write = await handler.handle(_payload("write", "w2"), caller=Caller("mqtt", "platform-ops"))
    assert ack is not None and ack.ok
    assert write is not None and not write.ok and "upstream.commands.allow.write" in (write.error or "")
    assert ops_write is not None and ops_write.ok
    assert target.driver.writes == [("mode", 1)]  # platform-ops' write only
    assert [e["outcome"] for e in read_entries(audit.path)] == ["accepted", "refused", "accepted"]
    entry = read_entries(audit.path)[1]
    assert entry["target"] == "pump_1.mode" and entry["value"] == 1  # what was attempted


async def test_a_kind_left_out_of_the_lists_is_sent_by_no_one(audit: AuditLog) -> None:
    handler, target = _handler(audit, {"ack": ["platform-ops"]})
    reply = await handler.handle(_payload("reload", "r1"), caller=Caller("mqtt", "platform-ops"))
    assert reply is not None and not reply.ok
    assert "upstream.commands.allow.reload" in (reply.error or "")
    assert target.reloaded == 0


async def test_a_payload_the_sender_may_not_send_is_refused_before_it_is_judged(
    audit: AuditLog,
) -> None:
    """An unlisted sender learns nothing about what a valid command would look like."""
    handler, _ = _handler(audit, {"write": ["platform-ops"]})
    reply = await handler.handle(b'{"id": "x1", "type": "write", "colour": "red"}',
                                 caller=Caller("mqtt", "intruder"))
    assert reply is not None and not reply.ok
    assert reply.error is not None and "may not send write" in reply.error
    assert "colour" not in reply.error


async def test_mqtt_and_cli_names_never_stand_for_each_other(audit: AuditLog) -> None:
    handler, target = _handler(audit, {"write": ["ops", "cli:admin"]})
    as_cli = await handler.handle(_payload("write", "c1"), caller=Caller("cli", "ops"))
    as_mqtt = await handler.handle(_payload("write", "c2"), caller=Caller("mqtt", "cli:admin"))
    assert as_cli is not None and not as_cli.ok
    assert as_mqtt is not None and not as_mqtt.ok
    assert target.driver.writes == []


@pytest.mark.parametrize(("entry", "caller", "allowed"), [
    ("cli:alice", Caller("cli", "alice"), True),
    ("cli:alice", Caller("cli", "bob"), False),
    ("cli:@engineers", Caller("cli", "bob", frozenset({"bob", "engineers"})), True),
    ("cli:@engineers", Caller("cli", "carol", frozenset({"carol"})), False),
    ("cli:*", Caller("cli", "anyone"), True),
    ("cli:*", Caller("mqtt", "anyone"), False),
    ("alice", Caller("cli", "alice"), False),
])
def test_local_users_are_named_by_user_group_or_star(entry: str, caller: Caller, allowed: bool) -> None:
    access = CommandAccess(CommandAllow(maintenance=[entry]), TOPIC)
    assert (access.refusal("maintenance", caller) is None) is allowed


def test_the_kernels_account_carries_its_groups() -> None:
    caller = unix_caller(os.getuid(), os.getgid())
    assert caller == Caller("cli", ME, caller.groups)
    assert MY_GROUP in caller.groups
    assert unix_caller(4_000_000_000 % 2**31, 0).name.startswith("uid:")


# --- the topics the sender is named by -------------------------------------------------


async def test_with_allow_lists_each_sender_has_its_own_topic(audit: AuditLog) -> None:
    handler, _ = _handler(audit, {"status": ["platform-ops"]})
    handler.attach()
    assert handler.connection.subscribed == [TOPIC, f"{TOPIC}/+"]  # type: ignore[union-attr]
    assert handler.caller_of(f"{TOPIC}/platform-ops") == Caller("mqtt", "platform-ops")
    assert handler.caller_of(TOPIC).channel == "upstream"
    assert handler.caller_of(f"{TOPIC}/a/b").channel == "upstream"


async def test_the_plain_commands_topic_is_refused_once_senders_are_listed(audit: AuditLog) -> None:
    handler, target = _handler(audit, {"status": ["platform-ops"], "write": ["platform-ops"]})
    await handler.on_message(TOPIC, _payload("write", "plain-1", by="platform-ops"))
    await handler.on_message(f"{TOPIC}/platform-ops", _payload("device_status", "named-1"))
    published = {topic: json.loads(body) for topic, body in handler.connection.published}  # type: ignore[union-attr]
    plain = published["pm/estate/gw1/replies/plain-1"]
    assert plain["ok"] is False
    assert f"must be sent on {TOPIC}/<your MQTT user>" in plain["error"]
    assert published["pm/estate/gw1/replies/named-1"]["ok"] is True
    assert target.driver.writes == []
    first, second = read_entries(audit.path)
    assert (first["outcome"], first["via"], first["who"]) == ("refused", "gw1-client", "platform-ops")
    assert (second["outcome"], second["via"]) == ("accepted", "mqtt:platform-ops")


async def test_without_allow_lists_the_plain_topic_serves_anyone_as_before(audit: AuditLog) -> None:
    handler, target = _handler(audit, None)
    handler.attach()
    assert handler.connection.subscribed == [TOPIC]  # type: ignore[union-attr]
    await handler.on_message(TOPIC, _payload("write", "legacy-1"))
    assert target.driver.writes == [("mode", 1)]


async def test_a_refused_sender_is_not_handed_an_earlier_reply_to_the_same_id(
    audit: AuditLog,
) -> None:
    handler, target = _handler(audit, {"status": ["platform-ops"]})
    first = await handler.handle(_payload("device_status", "same"), caller=Caller("mqtt", "platform-ops"))
    again = await handler.handle(_payload("device_status", "same"), caller=Caller("mqtt", "intruder"))
    assert first is not None and first.ok and first.result is not None
    assert again is not None and not again.ok and again.result is None


# --- from the configuration -----------------------------------------------------------


def _site(commands: Any) -> SiteConfig:
    return SiteConfig.model_validate({
        "site": {"id": "estate", "name": "小区"},
        "upstream": {"host": "127.0.0.1", "commands": commands},
    })


def test_commands_true_false_or_a_mapping_with_allow_lists() -> None:
    assert _site(True).upstream.commands.enabled is True  # type: ignore[union-attr]
    assert _site(False).upstream.commands.enabled is False  # type: ignore[union-attr]
    allow = _site({"allow": {"write": ["platform-ops"], "ack": ["monitoring", "cli:@gateway"]}})
    assert allow.upstream.commands.allow.ack == ["monitoring", "cli:@gateway"]  # type: ignore[union-attr]


@pytest.mark.parametrize(("entry", "message"), [
    ("ops/b1", "not an MQTT user or client id that can be a topic level"),
    ("#", "not an MQTT user or client id"),
    ("$SYS", "not starting with $"),
    ("cli:", "not a local user"),
    ("cli:a b", "not a local user"),
])
def test_a_sender_that_cannot_be_named_is_a_config_error(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        _site({"allow": {"write": [entry]}})


def test_an_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="wirte"):
        _site({"allow": {"wirte": ["ops"]}})


async def test_the_allow_lists_also_hold_for_the_local_cli_without_upstream_commands(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    config = _site({"enabled": False, "allow": {"maintenance": ["cli:@gateway"]}})
    gateway = SimpleNamespace(config=config, runners=[], data_dir=tmp_path, load_config=None)
    handler = build_commands(gateway)  # type: ignore[arg-type]
    try:
        assert handler.connection is None
        assert handler.access.restricted
        assert handler.access.refusal("maintenance", Caller("cli", "eng", frozenset({"gateway"}))) is None
        assert handler.access.refusal("write", Caller("cli", "eng", frozenset({"gateway"})))
    finally:
        await handler.close()


# --- the control socket ----------------------------------------------------------------


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose socket path fits the 107 bytes a Unix socket allows."""
    yield from socket_dir(tmp_path)


@pytest.mark.parametrize(("entry", "allowed"), [
    (f"cli:{ME}", True), (f"cli:@{MY_GROUP}", True), ("cli:*", True),
    ("cli:somebody-else", False), ("cli:@no-such-group", False),
])
async def test_the_control_socket_names_the_peer_the_kernel_reports(
    short_dir: Path, entry: str, allowed: bool
) -> None:
    audit = AuditLog(short_dir / AUDIT_FILE)
    audit.open()
    handler, target = _handler(audit, {"maintenance": [entry]})
    control = LocalControl(target, handler, short_dir / CONTROL_SOCKET)
    await control.start()
    try:
        body = {"id": "m1", "type": "maintenance", "device": "pump_1", "on": True, "by": "root"}
        reply = await asyncio.to_thread(request, short_dir / CONTROL_SOCKET, body)
    finally:
        await control.stop()
        await handler.close()
    assert reply["ok"] is allowed, reply
    [line] = read_entries(audit.path)
    assert line["via"] == f"cli:{ME}"  # the kernel's word, whatever "by" claims
    assert line["outcome"] == ("accepted" if allowed else "refused")
    assert (target.rules.calls == ["set_maintenance"]) is allowed
    assert verify(audit.path) == []


async def test_a_retained_command_is_never_run() -> None:
    """A retained command would run again on every reconnect, and anyone who once could
    publish one would command the gateway for ever after."""
    import paho.mqtt.client as mqtt

    from gateway.catalog import Catalog
    from gateway.config.models import MqttSinkConfig
    from gateway.sinks.mqtt import MqttSink

    sink = MqttSink(MqttSinkConfig(host="127.0.0.1", gateway_id="gw1"), Catalog("estate", "e", {}))
    sink._loop = asyncio.get_running_loop()  # noqa: SLF001 - what start() sets
    heard: list[bytes] = []
    sink.subscribe(f"{TOPIC}/+", lambda topic, payload: heard.append(payload))
    for retain, payload in ((True, b"retained"), (False, b"live")):
        message = mqtt.MQTTMessage(topic=f"{TOPIC}/platform-ops".encode())
        message.payload, message.retain = payload, retain
        sink._on_message(None, None, message)  # type: ignore[arg-type]  # noqa: SLF001
    await asyncio.sleep(0.01)
    assert heard == [b"live"]
