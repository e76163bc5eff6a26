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
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

# Unicode word characters: ids may be Chinese; no spaces or slashes (they become topics and tags).
ID_PATTERN = r"^\w[\w.-]*$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like '500ms', '5s', '2m', '1h', '30d'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 500ms, 2m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration; expected e.g. 5s, 500ms, 2m or 1h")


def parse_size(value: Any) -> int:
    """Bytes from a number or a string like '512MB' or '2GiB'."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MB or 2GiB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower() if match.group(2) else None
        return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"{value!r} is not a size; expected e.g. 512MB, 2GiB or a number of bytes")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# Rooms, floors and serial numbers are often written bare (room: 101); they are still text.
Text = Annotated[str, BeforeValidator(_number_as_text)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    fsync: Literal["full", "normal", "off"] = "normal"
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


class MqttSinkConfig(Model):
    """An MQTT broker that receives telemetry and status; `upstream:` is one of these."""

    type: Literal["mqtt"] = "mqtt"
    name: Identifier = "upstream"
    host: str
    port: int = Field(default=1883, gt=0, lt=65536)
    client_id: str | None = None
    username: str | None = None
    password: Secret | None = None
    topic_prefix: str = "pm"
    qos: Literal[0, 1, 2] = 1
    keepalive: Duration = 30.0
    batch_size: int = Field(default=500, gt=0)


SinkConfig = Annotated[InfluxSinkConfig | HistorySinkConfig | MqttSinkConfig, Field(discriminator="type")]


class Include(Model):
    profiles: list[str] = ["profiles/*.yaml"]
    devices: list[str] = ["devices/*.yaml"]
    rules: list[str] = []


# --- profiles (device maps) --------------------------------------------------------

DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
RegisterTable = Literal["holding", "input"]


class ModbusPoint(Model):
    table: RegisterTable = "holding"
    address: int = Field(ge=0, le=65535)
    type: DataType = "uint16"
    order: ByteOrder | None = None  # None: the device's order
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    name: str | None = None  # display name; Chinese welcome
    description: str | None = None
    writable: bool = False


class Profile(Model):
    """A device model's map: its points and the default rules for that kind of equipment."""

    id: Identifier
    name: str
    system: str  # e.g. water_supply, power, elevator, hvac, drainage, fire, access, lighting
    protocol: Literal["modbus"] = "modbus"
    vendor: str | None = None
    model: str | None = None
    order: ByteOrder = "ABCD"
    points: dict[Identifier, ModbusPoint]
    rules: list[dict[str, Any]] = []  # compiled by the rules issue; kept as written until then
    source: str | None = Field(default=None, exclude=True)  # file it came from


# --- devices -----------------------------------------------------------------------


class ModbusTcpConnection(Model):
    type: Literal["modbus_tcp"] = "modbus_tcp"
    host: str
    port: int = Field(default=502, gt=0, lt=65536)
    unit: int = Field(default=1, ge=0, le=255)
    timeout: Duration = 1.0


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
    connection: ModbusTcpConnection
    poll_interval: Duration = 5.0
    location: Location = Location()
    asset: Asset = Asset()
    enabled: bool = True
    source: str | None = Field(default=None, exclude=True)


class SiteConfig(Model):
    """The whole site: site.yaml with its included profiles and devices resolved."""

    site: SiteInfo
    data_dir: Path = Path("data")
    outbox: OutboxConfig = OutboxConfig()
    logging: LoggingConfig = LoggingConfig()
    sinks: list[SinkConfig] = []
    upstream: MqttSinkConfig | None = None
    include: Include = Include()
    profiles: dict[str, Profile] = Field(default_factory=dict, exclude=True)
    devices: list[Device] = Field(default_factory=list, exclude=True)
    source: Path | None = Field(default=None, exclude=True)

    def all_sinks(self) -> list[InfluxSinkConfig | HistorySinkConfig | MqttSinkConfig]:
        """The configured sinks plus upstream; local history when no InfluxDB is configured."""
        sinks: list[InfluxSinkConfig | HistorySinkConfig | MqttSinkConfig] = list(self.sinks)
        if self.upstream is not None:
            sinks.append(self.upstream)
        if not any(s.type in ("influxdb", "history") for s in sinks):
            sinks.append(HistorySinkConfig(type="history"))
        return sinks
