"""Typed configuration: what site.yaml, profiles and device files may say.

Every model forbids unknown keys, so a typo is an error with a location rather than
a silently ignored setting. Loading and error reporting live in `loader.py`.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    model_validator,
)

from gateway.config.energy_models import CounterMark, EnergyConfig, MeterConfig
from gateway.config.kpi_models import KpiConfig
from gateway.config.patrol_models import PatrolsConfig
from gateway.config.rule_models import MaintenanceTask, Rule, RuleFile, RulesConfig, SlaConfig
from gateway.config.types import (  # noqa: F401 (re-exported: models are imported from here)
    ID_PATTERN,
    Duration,
    Identifier,
    Model,
    Pause,
    Size,
    Text,
    Timeout,
    parse_duration,
    parse_size,
)
from gateway.config.web_models import WebConfig, web_switch


class Secret(Model):
    """A secret is named, never written: `{env: NAME}` or `{file: /path}`.

    The loader resolves it into `value`; a SecretStr never prints its content.
    """

    env: str | None = None
    file: Path | None = None
    value: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise ValueError(
                "secrets are not written in the YAML; use {env: VARIABLE} or {file: /path/to/secret}"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of env: or file:")
        return self

    def reveal(self) -> str:
        return self.value.get_secret_value() if self.value is not None else ""


# --- site.yaml ---------------------------------------------------------------------


class Location(Model):
    building: Text | None = None
    floor: Text | None = None
    room: Text | None = None


class SiteInfo(Model):
    id: Identifier
    name: str
    timezone: str = "Asia/Shanghai"
    address: str | None = None
    city: str | None = None


class OutboxConfig(Model):
    flush_interval: Duration = 0.2
    fsync: Literal["full", "normal", "off"] = "full"  # see docs/architecture.md: The outbox
    max_size: Size = 1024 * 1024 * 1024


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class InfluxSinkConfig(Model):
    type: Literal["influxdb"]
    name: Identifier
    url: str
    api: Literal["v2", "v1"] = "v2"
    # v2 (InfluxDB 2.x/3.x, 1.8+ compatibility API, VictoriaMetrics)
    org: str = ""
    bucket: str | None = None
    token: Secret | None = None
    # v1 (InfluxDB <= 1.7: /write with line protocol)
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    measurement: str = "readings"
    unit_as: Literal["tag", "field"] = "tag"
    batch_size: int = Field(default=5000, gt=0)
    flush_interval: Duration = 1.0
    gzip: bool = True
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _target(self) -> InfluxSinkConfig:
        if self.api == "v2" and not self.bucket:
            raise ValueError("an InfluxDB v2 sink needs bucket:")
        if self.api == "v1" and not self.database:
            raise ValueError("an InfluxDB v1 sink needs database:")
        return self


class HistorySinkConfig(Model):
    type: Literal["history"]
    name: Identifier = "history"
    retention: Duration = 30 * 86400.0


class ReportPolicy(Model):
    """Report by exception: which readings go upstream over a thin (4G) link.

    A point is sent when it changed by more than `deadband` (absolute) or `deadband_percent`
    (of the last value sent), but not more often than `min_interval`, and at least every
    `max_interval` as a heartbeat. A point whose quality changed is always sent.
    """

    deadband: float = Field(default=0.0, ge=0)
    deadband_percent: float = Field(default=0.0, ge=0, le=100)
    min_interval: Pause = 0.0
    max_interval: Duration = 900.0


class TlsConfig(Model):
    """TLS to the broker: the CA that signed it, and our certificate if it asks for one."""

    ca_file: Path | None = None  # None: the system's CA store
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: Secret | None = None
    verify_hostname: bool = True


# Who may send which kind of command: an MQTT user (or client id) named by the command's
# topic level, which the broker's ACL vouches for, a local CLI user (`cli:<user>`,
# `cli:@<group>`, `cli:*`), or a status page login (`web:<login>`, `web:*`).
# docs/commands.md "Who may command" has the trust model.
_CLI_PRINCIPAL = re.compile(r"^cli:(\*|@?[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?)$")
_WEB_PRINCIPAL = re.compile(r"^web:(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})$")
_MQTT_PRINCIPAL = re.compile(r"^[^/+#\s\x00-\x1f$][^/+#\s\x00-\x1f]{0,127}$")


def _principal(value: str) -> str:
    if value.startswith("cli:"):
        if not _CLI_PRINCIPAL.match(value):
            raise ValueError(
                f"{value!r} is not a local user: write cli:<user>, cli:@<group> or cli:* (any "
                "user who may open the control socket)"
            )
    elif value.startswith("web:"):
        if not _WEB_PRINCIPAL.match(value):
            raise ValueError(f"{value!r} is not a status page login: write web:<login> (a login "
                             "of web.password_file) or web:* (any of them)")
    elif not _MQTT_PRINCIPAL.match(value):
        raise ValueError(
            f"{value!r} is not an MQTT user or client id that can be a topic level: no /, +, #, "
            "spaces or control characters, not starting with $, at most 128 characters"
        )
    return value


Principal = Annotated[str, AfterValidator(_principal)]


class CommandAllow(Model):
    """Per kind of command, who may send it; a kind left out may be sent by no one."""

    write: list[Principal] = []  # write a point of a device
    status: list[Principal] = []  # device_status: read a device's health (changes nothing)
    reload: list[Principal] = []  # load the configuration files again
    ack: list[Principal] = []  # ack_alarm
    shelve: list[Principal] = []  # shelve_alarm, unshelve_alarm
    alarm_service: list[Principal] = []  # take an alarm out of service or put it back
    ticket: list[Principal] = []  # update_ticket: dispatch, arrive, resolve, close, ...
    maintenance: list[Principal] = []  # a device into or out of maintenance mode
    meter: list[Principal] = []  # meter_reading, meter_replace, meter_snapshot


def _commands_switch(value: Any) -> Any:
    """`commands: true|false` is short for `commands: {enabled: true|false}`."""
    if isinstance(value, bool):
        return {"enabled": value}
    if not isinstance(value, dict | BaseModel):
        raise ValueError("commands takes true, false, or a mapping with enabled: and allow:")
    return value


class CommandsConfig(Model):
    """Whether the platform may command this gateway, and who may send what.

    Without `allow`, anyone the broker lets publish on the commands topic may send any
    command (and anyone who may open the control socket, locally). With it, a command
    must arrive on `<commands topic>/<MQTT user>` (or from a listed `cli:` user) and
    its kind must list that sender.
    """

    enabled: bool = True  # false: nothing is taken upstream (the local CLI still works)
    allow: CommandAllow | None = None


class MqttSinkConfig(Model):
    """An MQTT broker that receives telemetry and status; `upstream:` is one of these."""

    type: Literal["mqtt"] = "mqtt"
    name: Identifier = "upstream"
    host: str
    port: int = Field(default=1883, gt=0, lt=65536)
    client_id: str | None = None
    gateway_id: Identifier | None = None  # a topic level; None: the host name. Unique per broker
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    topic_prefix: str = "pm"
    qos: Literal[0, 1, 2] = 1
    keepalive: Duration = 30.0
    batch_size: int = Field(default=500, gt=0)
    compression: Literal["none", "gzip"] = "none"
    report_by_exception: bool = False  # True: telemetry filtered by each point's ReportPolicy
    report: ReportPolicy = ReportPolicy()  # the site default for points without their own
    backlog_rate: float | None = Field(default=None, gt=0)  # messages/s when draining a backlog
    # the platform's commands on this connection: true, false, or {enabled, allow}
    commands: Annotated[CommandsConfig, BeforeValidator(_commands_switch)] = CommandsConfig()


SinkConfig = Annotated[InfluxSinkConfig | HistorySinkConfig | MqttSinkConfig, Field(discriminator="type")]


class Include(Model):
    profiles: list[str] = ["profiles/*.yaml"]
    devices: list[str] = ["devices/*.yaml"]
    rules: list[str] = ["rules/*.yaml"]  # site rule files: rules across devices, maintenance plans


# --- profiles (device maps) --------------------------------------------------------

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
    "string", "bcd16", "bcd32",
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
RegisterTable = Literal["holding", "input", "coil", "discrete"]
Addressing = Literal["zero_based", "one_based", "modicon"]

BIT_TABLES = ("coil", "discrete")
INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "bcd16", "bcd32")
# Modicon references engineers copy from vendor manuals: first digit names the table.
_MODICON = {0: "coil", 1: "discrete", 3: "input", 4: "holding"}


def modicon_reference(reference: int) -> tuple[str, int] | None:
    """(table, zero-based address) for a Modicon reference: 40001 or 400001 is holding 0."""
    if 100_000 <= reference <= 465_536:  # six digits: up to 65536 registers per table
        table, offset = _MODICON.get(reference // 100_000), reference % 100_000
    elif 1 <= reference <= 49_999:  # five digits (coils 00001-09999 read as plain numbers)
        table, offset = _MODICON.get(reference // 10_000), reference % 10_000
    else:
        return None
    if table is None or offset < 1:
        return None
    return table, offset - 1


class ModbusPoint(Model):
    """One point in a register map. `address` is the protocol (zero-based) address once
    validated; the profile's `addressing` says how it was written."""

    table: RegisterTable = "holding"
    address: int = Field(ge=0, le=65535)
    type: DataType = "uint16"
    bit: int | None = Field(default=None, ge=0, le=15)  # a bool from one bit of a register
    length: int | None = Field(default=None, ge=1, le=125)  # registers, for strings
    encoding: Literal["ascii", "utf-8"] = "ascii"
    order: ByteOrder | None = None  # None: the device's order
    scale: float = 1.0
    offset: float = 0.0
    min: float | None = None  # engineering range: reads outside are out_of_range, writes refused
    max: float | None = None
    enum: dict[int, str] | None = None  # code -> text (a fault code's meaning)
    unit: str | None = None
    name: str | None = None  # display name; Chinese welcome
    description: str | None = None
    writable: bool = False
    poll_group: Identifier | None = None  # None: the device's poll_interval
    report: ReportPolicy | None = None  # upstream report by exception; None: the site default
    counter: CounterMark = None  # a cumulative counter (kWh, m³): consumption, rollups, ledger

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bool(cls, data: Any) -> Any:
        # Defined before _resolve_address on purpose: pydantic runs "before" validators
        # last-defined first, and a Modicon coil reference must get its table first.
        if isinstance(data, dict) and "type" not in data and (
            data.get("table") in BIT_TABLES or data.get("bit") is not None
        ):
            return {**data, "type": "bool"}
        return data

    @model_validator(mode="before")
    @classmethod
    def _resolve_address(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or type(data.get("address")) is not int:
            return data
        addressing = (info.context or {}).get("addressing", "zero_based")
        address, table = data["address"], data.get("table")
        reference = modicon_reference(address)
        if addressing == "modicon":
            if reference is None:
                raise ValueError(
                    f"{address} is not a Modicon reference; with addressing: modicon write "
                    "00001-09999 for coils, 10001-19999 discrete inputs, 30001-39999 input "
                    "registers, 40001-49999 holding registers (or six digits, e.g. 400001)"
                )
            ref_table, zero_based = reference
            if table is not None and table != ref_table:
                raise ValueError(
                    f"{address} is Modicon notation for {ref_table} register {zero_based + 1}, "
                    f"but table: {table}; drop table: (the reference names it) or use a "
                    f"{table} reference"
                )
            return {**data, "table": ref_table, "address": zero_based}
        if table is None and reference is not None and reference[0] in ("input", "holding"):
            ref_table, zero_based = reference
            raise ValueError(
                f"address {address} looks like Modicon notation ({ref_table} register "
                f"{zero_based + 1}, protocol address {zero_based}); add addressing: modicon "
                f"to the profile to write addresses that way, or give table: to mean "
                f"register {address} itself"
            )
        if addressing == "one_based":
            if address < 1:
                raise ValueError("with addressing: one_based, addresses start at 1")
            return {**data, "address": address - 1}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        if self.table in BIT_TABLES and (self.type != "bool" or self.bit is not None):
            raise ValueError(f"{self.table} points are single bits: type bool, no bit:")
        if self.type == "bool" and self.table not in BIT_TABLES and self.bit is None:
            raise ValueError("a bool from a register needs bit: (0-15)")
        if self.bit is not None and self.type != "bool":
            raise ValueError("bit: reads one bit as a bool; drop type: or write type: bool")
        if self.type == "string" and self.length is None:
            raise ValueError("a string needs length: (in registers, two bytes each)")
        if self.enum is not None and self.type not in INTEGER_TYPES:
            raise ValueError("enum: maps integer codes to text; the type must be an integer")
        if self.writable and self.table in ("input", "discrete"):
            raise ValueError(f"{self.table} points are read-only in Modbus; drop writable:")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: is above max:")
        return self


# BACnet object types as bacpypes3 names them (ASHRAE 135); the ones building automation uses.
BACNET_OBJECT_TYPES = (
    "accumulator", "analog-input", "analog-output", "analog-value", "averaging",
    "binary-input", "binary-lighting-output", "binary-output", "binary-value", "calendar",
    "characterstring-value", "command", "date-value", "datetime-value", "device",
    "event-enrollment", "file", "integer-value", "large-analog-value", "life-safety-point",
    "life-safety-zone", "lighting-output", "load-control", "loop", "multi-state-input",
    "multi-state-output", "multi-state-value", "notification-class", "positive-integer-value",
    "program", "pulse-converter", "schedule", "staging", "structured-view", "trend-log",
)
BACNET_COMMANDABLE = ("analog-output", "binary-output", "multi-state-output", "analog-value",
                      "binary-value", "multi-state-value", "lighting-output",
                      "binary-lighting-output", "integer-value", "large-analog-value",
                      "positive-integer-value", "characterstring-value")
MAX_BACNET_INSTANCE = 4194302


def parse_object_id(value: str) -> tuple[str, int]:
    """('analog-input', 1) from 'analog-input,1' (bacpypes3's form) or 'analog-input:1'."""
    text = value.strip()
    for separator in (",", ":"):
        if separator in text:
            kind, _, number = text.partition(separator)
            break
    else:
        raise ValueError(f"{value!r} is not an object id; write type,instance, e.g. analog-input,1")
    kind = kind.strip()
    if kind not in BACNET_OBJECT_TYPES:
        from difflib import get_close_matches

        close = get_close_matches(kind, BACNET_OBJECT_TYPES, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; expected one of {', '.join(BACNET_OBJECT_TYPES)}"
        raise ValueError(f"{kind!r} is not a BACnet object type{hint}")
    if not number.strip().isdigit() or not 0 <= int(number) <= MAX_BACNET_INSTANCE:
        raise ValueError(f"{number.strip()!r} is not an object instance (0-{MAX_BACNET_INSTANCE})")
    return kind, int(number)


class BacnetPoint(Model):
    """One property of one BACnet object; present-value unless said otherwise."""

    object: str  # analog-input,1
    property: str = "present-value"
    array_index: int | None = Field(default=None, ge=0)
    cov: bool = False  # subscribe to changes instead of polling (falls back to polling)
    cov_increment: float | None = Field(default=None, gt=0)
    writable: bool = False
    priority: int = Field(default=8, ge=1, le=16)  # BACnet command priority for writes
    scale: float = 1.0
    offset: float = 0.0
    min: float | None = None
    max: float | None = None
    enum: dict[int, str] | None = None  # multi-state values -> text (state texts)
    unit: str | None = None
    name: str | None = None
    description: str | None = None
    poll_group: Identifier | None = None
    report: ReportPolicy | None = None
    counter: CounterMark = None  # a cumulative counter (kWh, m³): consumption, rollups, ledger

    @model_validator(mode="after")
    def _valid_object(self) -> BacnetPoint:
        kind, _ = parse_object_id(self.object)
        if self.writable and self.property == "present-value" and kind not in BACNET_COMMANDABLE:
            raise ValueError(f"{kind} present-value is not writable; inputs are read-only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: is above max:")
        return self


MqttValueType = Literal["number", "integer", "bool", "text"]


class MqttPoint(Model):
    """A value carried in an MQTT payload: the topic it arrives on and where in the payload.

    `topic` is joined to the device's `base_topic` ("" means the base topic itself;
    + and # wildcards are allowed). `path` is a JSON path into the payload ($.door.state,
    $.readings[0].value); without it the whole payload is the value (a plain number or text).
    """

    topic: str = ""
    path: str | None = None
    type: MqttValueType = "number"
    map: dict[str, float | int | bool | str] | None = None  # payload text -> value ("open" -> 1)
    scale: float = 1.0
    offset: float = 0.0
    min: float | None = None
    max: float | None = None
    enum: dict[int, str] | None = None
    sensitive: bool = False  # masked in logs (card ids)
    unit: str | None = None
    name: str | None = None
    description: str | None = None
    writable: bool = False  # published to `command_topic` by a write
    report: ReportPolicy | None = None
    counter: CounterMark = None  # a cumulative counter (kWh, m³): consumption, rollups, ledger

    @model_validator(mode="after")
    def _valid_path(self) -> MqttPoint:
        if self.path is not None:
            if not self.path.startswith("$"):
                raise ValueError(
                    f"path {self.path!r} must be a JSON path starting with $, e.g. $.door.state"
                )
            from jsonpath_ng import parse  # compiled again by the driver; here to check early

            try:
                parse(self.path)
            except Exception as exc:  # jsonpath-ng's lexer and parser raise several types
                raise ValueError(f"path {self.path!r} is not a JSON path: {exc}") from None
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: is above max:")
        return self


def _point_protocol(value: Any) -> str:
    if isinstance(value, dict):
        if "object" in value:
            return "bacnet"
        return "mqtt" if "topic" in value or "path" in value else "modbus"
    return {BacnetPoint: "bacnet", MqttPoint: "mqtt"}.get(type(value), "modbus")


Point = Annotated[
    Annotated[ModbusPoint, Tag("modbus")]
    | Annotated[BacnetPoint, Tag("bacnet")]
    | Annotated[MqttPoint, Tag("mqtt")],
    Discriminator(_point_protocol),
]
PROTOCOL_POINTS = {"modbus": ModbusPoint, "bacnet": BacnetPoint, "mqtt": MqttPoint}
POINT_KEYS = {"modbus": "address:", "bacnet": "object: (a BACnet object id)", "mqtt": "topic: or path:"}


class AvoidRange(Model):
    """Registers never to read (a gap in the device's map that it answers with an exception)."""

    table: RegisterTable = "holding"
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535)  # inclusive


class ReadLimits(Model):
    """How reads may be merged, for quirky devices."""

    max_registers: int = Field(default=125, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=124)  # unused registers a merged read may span
    avoid: list[AvoidRange] = []
    one_request_per_point: bool = False


class Profile(Model):
    """A device model's map: its points and the default rules for that kind of equipment."""

    id: Identifier
    name: str
    system: str  # e.g. water_supply, power, elevator, hvac, drainage, fire, access, lighting
    protocol: Literal["modbus", "bacnet", "mqtt"] = "modbus"
    vendor: str | None = None
    model: str | None = None
    description: str | None = None
    order: ByteOrder = "ABCD"
    addressing: Addressing = "zero_based"
    limits: ReadLimits = ReadLimits()
    points: dict[Identifier, Point]
    rules: list[Rule] = []  # docs/rules.md; expressions are compiled by the loader
    maintenance: list[MaintenanceTask] = []  # preventive tickets for each device of the model
    source: str | None = Field(default=None, exclude=True)  # file it came from

    @model_validator(mode="after")
    def _points_match_protocol(self) -> Profile:
        wanted = PROTOCOL_POINTS[self.protocol]
        strays = [name for name, point in self.points.items() if not isinstance(point, wanted)]
        if strays:
            how = POINT_KEYS[self.protocol]
            raise ValueError(
                f"a {self.protocol} profile's points are written with {how}; "
                f"these are not: {', '.join(strays)}"
            )
        return self

    @classmethod
    def from_data(cls, data: Any) -> Profile:
        """Validate with the profile's addressing passed down to its points."""
        addressing = data.get("addressing", "zero_based") if isinstance(data, dict) else None
        return cls.model_validate(data, context={"addressing": addressing})


# --- devices -----------------------------------------------------------------------


class ModbusTcpConnection(Model):
    type: Literal["modbus_tcp"] = "modbus_tcp"
    host: str
    port: int = Field(default=502, gt=0, lt=65536)
    unit: int = Field(default=1, ge=0, le=255)
    timeout: Timeout = 1.0
    pause: Pause = 0.0  # between requests on this connection, for gateways that need it


class ModbusRtuConnection(Model):
    """RS-485 through a serial adapter; every device on one port shares one bus."""

    type: Literal["modbus_rtu"]
    port: str  # /dev/ttyUSB0, /dev/ttyAMA0, /dev/serial/by-id/...
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: int = Field(default=1, ge=1, le=247)
    timeout: Timeout = 0.5
    pause: Pause = 0.0  # added to the inter-frame gap the baud rate requires


class ModbusRtuOverTcpConnection(Model):
    """RTU frames through a serial server (serial-to-Ethernet converter)."""

    type: Literal["modbus_rtu_over_tcp"]
    host: str
    port: int = Field(default=502, gt=0, lt=65536)
    unit: int = Field(default=1, ge=1, le=247)
    timeout: Timeout = 1.0
    pause: Pause = 0.0


class BacnetConnection(Model):
    """A BACnet/IP device: where it answers and its device instance."""

    type: Literal["bacnet_ip"]
    address: str  # 192.168.1.20, 192.168.1.20:47808, or network:mac for a routed device (5:12)
    device_instance: int = Field(ge=0, le=MAX_BACNET_INSTANCE)
    timeout: Timeout = 3.0
    cov_lifetime: Duration = 300.0  # seconds a COV subscription lasts before it is renewed
    cov_confirmed: bool = False
    max_apdu: int | None = Field(default=None, ge=50, le=1476)  # None: what the device says
    segmentation: bool | None = None  # None: what the device says
    rpm: bool | None = None  # ReadPropertyMultiple; None: try it, fall back if refused


class MqttConnection(Model):
    """A device that publishes to a broker (access controllers, IoT boxes, call buttons)."""

    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(default=1883, gt=0, lt=65536)
    username: str | None = None
    password: Secret | None = None
    client_id: str | None = None  # devices sharing a broker share one client; None: derived
    base_topic: str  # e.g. access/b1/door-01; the profile's point topics are joined to it
    command_topic: str | None = None  # where writes to writable points are published
    timestamp_path: str | None = None  # JSON path to the device's own time; None: arrival
    silence: Duration = 300.0  # offline after this long without a message
    max_rate: float = Field(default=20.0, gt=0)  # messages per second before it is throttled
    max_payload: Size = 64 * 1024
    qos: Literal[0, 1, 2] = 1


def _connection_type(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "modbus_tcp")
    return getattr(value, "type", "modbus_tcp")


Connection = Annotated[
    Annotated[ModbusTcpConnection, Tag("modbus_tcp")]
    | Annotated[ModbusRtuConnection, Tag("modbus_rtu")]
    | Annotated[ModbusRtuOverTcpConnection, Tag("modbus_rtu_over_tcp")]
    | Annotated[BacnetConnection, Tag("bacnet_ip")]
    | Annotated[MqttConnection, Tag("mqtt")],
    Discriminator(_connection_type),
]


class Asset(Model):
    vendor: str | None = None
    model: Text | None = None
    serial: Text | None = None
    purchase_date: date | None = None
    warranty_end: date | None = None


class Device(Model):
    id: Identifier
    name: str | None = None
    profile: Identifier
    connection: Connection
    poll_interval: Duration = 5.0
    poll_groups: dict[Identifier, Duration] = {}  # group -> interval, for points with poll_group
    order: ByteOrder | None = None  # overrides the profile's byte and word order
    limits: ReadLimits | None = None  # overrides the profile's read limits
    retries: int = Field(default=1, ge=0, le=5)
    offline_after: int = Field(default=3, ge=1, le=100)  # failed polls before offline
    location: Location = Location()
    asset: Asset = Asset()
    meter: MeterConfig | None = None  # a meter's household and plausibility limits
    enabled: bool = True
    source: str | None = Field(default=None, exclude=True)


class ForeignDeviceRegistration(Model):
    """Register with a BBMD to reach BACnet devices on other subnets."""

    address: str  # the BBMD, host[:port]
    ttl: Duration = 300.0


def _listen_address(text: str) -> str:
    listen_address(text)
    return text


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port`, `:port` or a bare port (127.0.0.1)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port with a port 1-65535; "
                         "e.g. 127.0.0.1:9108, or 9108 for localhost")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsConfig(Model):
    """The local Prometheus endpoint, `http://<listen>/metrics`; off unless `metrics:` is written.

    A bare port (`9108` or `:9108`) listens on 127.0.0.1: the figures name devices and
    sinks, so they leave the box only when a host is written on purpose.
    """

    listen: Annotated[Text, AfterValidator(_listen_address)] = "127.0.0.1:9108"

    @property
    def address(self) -> tuple[str, int]:
        return listen_address(self.listen)


class BacnetLocal(Model):
    """The gateway's own BACnet/IP presence."""

    address: str = "0.0.0.0:47808"  # local address[/prefix][:port]; the port devices answer to
    device_instance: int = Field(default=4194300, ge=0, le=MAX_BACNET_INSTANCE)
    device_name: str | None = None
    vendor_id: int = Field(default=999, ge=0, le=65535)
    max_apdu: int = Field(default=1476, ge=50, le=1476)
    foreign_device: ForeignDeviceRegistration | None = None


class SiteConfig(Model):
    """The whole site: site.yaml with its included profiles and devices resolved."""

    site: SiteInfo
    data_dir: Path = Path("data")
    outbox: OutboxConfig = OutboxConfig()
    logging: LoggingConfig = LoggingConfig()
    sinks: list[SinkConfig] = []
    upstream: MqttSinkConfig | None = None
    bacnet: BacnetLocal = BacnetLocal()
    include: Include = Include()
    sla: SlaConfig = SlaConfig()
    energy: EnergyConfig = EnergyConfig()
    patrols: PatrolsConfig = PatrolsConfig()  # guard patrols (巡更): docs/patrols.md
    rules: RulesConfig = RulesConfig()
    kpi: KpiConfig = KpiConfig()  # equipment KPIs: intact-rate groups, fault severities
    metrics: MetricsConfig | None = None  # the local /metrics endpoint; None: off
    # the local status page (docs/status-page.md); None: off
    web: Annotated[WebConfig | None, BeforeValidator(web_switch)] = None
    profiles: dict[str, Profile] = Field(default_factory=dict, exclude=True)
    devices: list[Device] = Field(default_factory=list, exclude=True)
    rule_files: list[RuleFile] = Field(default_factory=list, exclude=True)
    source: Path | None = Field(default=None, exclude=True)

    def all_sinks(self) -> list[InfluxSinkConfig | HistorySinkConfig | MqttSinkConfig]:
        """The configured sinks plus upstream; local history when no InfluxDB is configured."""
        sinks: list[InfluxSinkConfig | HistorySinkConfig | MqttSinkConfig] = list(self.sinks)
        if self.upstream is not None:
            sinks.append(self.upstream)
        if not any(s.type in ("influxdb", "history") for s in sinks):
            sinks.append(HistorySinkConfig(type="history"))
        return sinks
