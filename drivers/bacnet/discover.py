"""BACnet discovery: who answers, what objects they hold, and the YAML that maps them.

Engineers otherwise type a controller's object list by hand from a BAS workstation. Here
a Who-Is (global, an instance range, or directed at known host:port addresses, which is
what works where broadcasts do not travel) collects I-Ams; each device's object list is
read (index by index when it is too long for the device to send whole), then for each
point-like object the properties a profile needs. `render_profile` and `render_devices`
turn that into our YAML with comments, and `write_site_files` writes it without ever
overwriting a file unless asked.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.app import Application
from bacpypes3.basetypes import ErrorType
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address

from gateway.config.models import BACNET_COMMANDABLE

# BACnet engineering units (bacpypes3's names) as the symbols our profiles write.
UNIT_SYMBOLS = {
    "degrees-celsius": "°C", "degrees-fahrenheit": "°F", "degrees-kelvin": "K",
    "delta-degrees-kelvin": "K", "percent": "%", "percent-relative-humidity": "%RH",
    "pascals": "Pa", "kilopascals": "kPa", "bars": "bar", "millibars": "mbar",
    "cubic-meters-per-hour": "m³/h", "cubic-meters-per-second": "m³/s",
    "liters-per-second": "L/s", "liters-per-minute": "L/min", "liters-per-hour": "L/h",
    "cubic-meters": "m³", "liters": "L", "watts": "W", "kilowatts": "kW", "megawatts": "MW",
    "kilowatt-hours": "kWh", "megawatt-hours": "MWh", "watt-hours": "Wh",
    "kilojoules": "kJ", "megajoules": "MJ", "volts": "V", "kilovolts": "kV",
    "millivolts": "mV", "amperes": "A", "milliamperes": "mA", "hertz": "Hz",
    "kilovolt-amperes": "kVA", "kilovolt-amperes-reactive": "kvar", "power-factor": "PF",
    "revolutions-per-minute": "rpm", "meters-per-second": "m/s", "meters": "m",
    "millimeters": "mm", "seconds": "s", "minutes": "min", "hours": "h", "days": "d",
    "parts-per-million": "ppm", "luxes": "lx", "tons-refrigeration": "RT",
}

# Objects a profile reads points from; the rest (schedules, trend logs, the network port)
# are configuration of the controller, not telemetry.
POINT_TYPES = (
    "analog-input", "analog-output", "analog-value", "binary-input", "binary-output",
    "binary-value", "multi-state-input", "multi-state-output", "multi-state-value",
    "accumulator", "integer-value", "positive-integer-value", "large-analog-value",
)
# Inputs and values change on their own; outputs change only when commanded.
COV_TYPES = (
    "analog-input", "analog-value", "binary-input", "binary-value", "multi-state-input",
    "multi-state-value",
)
_ABBREVIATIONS = {
    "analog-input": "ai", "analog-output": "ao", "analog-value": "av", "binary-input": "bi",
    "binary-output": "bo", "binary-value": "bv", "multi-state-input": "msi",
    "multi-state-output": "mso", "multi-state-value": "msv", "accumulator": "acc",
    "integer-value": "iv", "positive-integer-value": "piv", "large-analog-value": "lav",
}
# Properties read per object kind; present-value is read for its type.
_COMMON = ("object-name", "description", "present-value")
_BY_KIND = {"analog": ("units", "cov-increment"), "binary": ("inactive-text", "active-text"),
            "multi-state": ("state-text",)}

_STOPWORDS = {"the", "a", "an", "of", "from", "to", "for", "in", "on", "s"}

Progress = Callable[[int, int, str], None]  # done, total, what


class DiscoveryError(Exception):
    """Discovery cannot start (the local address is taken) or a device stopped answering."""


@dataclass(slots=True)
class DiscoveredObject:
    """One point-like object as the device describes it."""

    kind: str  # analog-input
    instance: int
    name: str = ""
    description: str | None = None
    units: str | None = None  # bacpypes3's name: degrees-celsius
    cov_increment: float | None = None  # the change that makes the device notify
    value_type: str | None = None  # the present value's BACnet type: Real, BinaryPV...
    states: dict[int, str] | None = None  # state texts; binary: {0: inactive, 1: active}
    commandable: bool = False  # a priority array: writes take a priority, relinquish frees

    @property
    def object_id(self) -> str:
        return f"{self.kind},{self.instance}"


@dataclass(slots=True)
class DiscoveredDevice:
    """A device that answered Who-Is, and what it holds."""

    instance: int
    address: str  # host:port as the I-Am came from
    vendor_id: int | None = None
    max_apdu: int | None = None
    segmentation: str | None = None
    name: str = ""
    description: str | None = None
    vendor_name: str = ""
    model_name: str = ""
    objects: list[DiscoveredObject] = field(default_factory=list)
    skipped: int = 0  # objects that are not points (schedules, trend logs...)
    error: str | None = None  # why its objects could not be read

    @property
    def model_key(self) -> str:
        """The profile id its model gets: vendor and model name, made safe."""
        return safe_id(f"{self.vendor_name} {self.model_name}", fallback=f"bacnet_device_{self.instance}")

    @property
    def device_id(self) -> str:
        return safe_id(self.name, fallback=f"bacnet_{self.instance}")


def safe_id(text: str, *, fallback: str) -> str:
    """An id for our YAML from a BACnet name: ASCII words in snake case ('SupplyAirTemp'
    and 'Supply Air-Temp' give supply_air_temp); `fallback` when nothing is left, as with
    a name written only in Chinese (which is kept as the point's name: instead)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    slug = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
    if not slug or not re.search(r"[a-z]", slug):
        return fallback
    return slug[:60] if slug[0].isalpha() else f"p_{slug}"[:60]


def point_id(obj: DiscoveredObject) -> str:
    """The point's key: from its object name, else from the first words of its description
    (a Chinese name usually comes with an English description), else type and instance."""
    fallback = f"{_ABBREVIATIONS.get(obj.kind, 'obj')}_{obj.instance}"
    by_name = safe_id(obj.name, fallback="")
    if by_name:
        return by_name
    if obj.description:
        phrase = re.split(r"[,.;:()（），。；]", obj.description, maxsplit=1)[0]
        words = [w for w in safe_id(phrase, fallback="").split("_") if w and w not in _STOPWORDS]
        if words and len("_".join(words[:4])) >= 3:
            return "_".join(words[:4])
    return fallback


# --- the local application ---------------------------------------------------------------


def local_application(address: str, device_instance: int = 4194300, vendor_id: int = 999) -> Application:
    """A bacpypes3 application on `address` (host[/prefix]:port) to send Who-Is from.

    Must be called with an event loop running (bacpypes3 binds its socket on it).
    """
    device = DeviceObject(
        objectIdentifier=("device", device_instance), objectName=f"gateway-discovery-{device_instance}",
        vendorIdentifier=vendor_id,
    )
    port = NetworkPortObject(address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1")
    return Application.from_object_list([device, port])


# --- scanning --------------------------------------------------------------------------


async def who_is(app: Application, *, addresses: Iterable[str] = (), low: int | None = None,
                 high: int | None = None, timeout: float = 3.0) -> list[DiscoveredDevice]:
    """Devices that answer: one directed Who-Is per address, or one global broadcast when
    none is given; `low`-`high` limits the device instances asked."""
    targets = [Address(a) for a in addresses] or [None]
    answers = await asyncio.gather(*(
        app.who_is(low, high, address=target, timeout=timeout) for target in targets
    ))
    found: dict[int, DiscoveredDevice] = {}
    for i_am in (i for batch in answers for i in batch):
        instance = i_am.iAmDeviceIdentifier[1]
        found.setdefault(instance, DiscoveredDevice(
            instance=instance, address=str(i_am.pduSource), vendor_id=int(i_am.vendorID),
            max_apdu=int(i_am.maxAPDULengthAccepted), segmentation=str(i_am.segmentationSupported),
        ))
    return sorted(found.values(), key=lambda d: d.instance)


async def describe(app: Application, device: DiscoveredDevice, progress: Progress | None = None) -> None:
    """Fill in `device`: its own names and, for every point-like object, what a profile needs.
    A device that stops answering keeps what was read, with `error` saying why."""
    address, me = Address(device.address), f"device,{device.instance}"
    try:
        device.name = str(await app.read_property(address, me, "object-name"))
        device.vendor_name = str(await _optional(app, address, me, "vendor-name") or "")
        device.model_name = str(await _optional(app, address, me, "model-name") or "")
        device.description = _text(await _optional(app, address, me, "description"))
        object_ids = await _object_list(app, address, me)
    except (ErrorRejectAbortNack, TimeoutError) as exc:
        device.error = f"cannot read the device object: {_why(exc)}"
        return
    points = [(str(t), int(i)) for t, i in object_ids if str(t) in POINT_TYPES]
    device.skipped = len(object_ids) - len(points)
    for done, (kind, instance) in enumerate(points, 1):
        obj = DiscoveredObject(kind, instance)
        try:
            values = await _properties(app, address, obj.object_id, _wanted(kind))
        except (ErrorRejectAbortNack, TimeoutError) as exc:
            device.error = f"stopped answering at {obj.object_id}: {_why(exc)}"
            return
        _fill(obj, values)
        device.objects.append(obj)
        if progress is not None:
            progress(done, len(points), device.name or me)


def _wanted(kind: str) -> list[str]:
    family = next((f for f in _BY_KIND if kind.startswith(f)), None)
    extra = _BY_KIND.get(family, ()) if family else ()
    commandable = ("priority-array",) if kind in BACNET_COMMANDABLE else ()
    return [*_COMMON, *extra, *commandable]


async def _object_list(app: Application, address: Address, me: str) -> list[tuple[Any, int]]:
    """The whole object-list, or element by element from a device that cannot send it whole
    (no segmentation and more objects than one APDU holds)."""
    try:
        return list(await app.read_property(address, me, "object-list"))
    except ErrorRejectAbortNack:
        count = int(await app.read_property(address, me, "object-list", 0))
        return [await app.read_property(address, me, "object-list", i) for i in range(1, count + 1)]


async def _properties(app: Application, address: Address, object_id: str, names: list[str]) -> dict[str, Any]:
    """The named properties of one object, a missing one absent: one ReadPropertyMultiple,
    or ReadProperty each when the device refuses RPM."""
    try:
        answer = await app.read_property_multiple(address, [object_id, names])
    except ErrorRejectAbortNack:
        return {n: v for n in names if (v := await _optional(app, address, object_id, n)) is not None}
    return {str(prop): value for _, prop, _, value in answer
            if value is not None and not isinstance(value, ErrorType | ErrorRejectAbortNack)}


async def _optional(app: Application, address: Address, object_id: str, name: str) -> Any:
    """A property the object may lack: its value, or None when the device says it has none."""
    try:
        return await app.read_property(address, object_id, name)
    except ErrorRejectAbortNack as exc:
        if _why(exc).startswith(("abort", "no response")):
            raise
        return None


def _fill(obj: DiscoveredObject, values: dict[str, Any]) -> None:
    obj.name = _text(values.get("object-name")) or obj.object_id
    obj.description = _text(values.get("description"))
    if (units := values.get("units")) is not None:
        obj.units = str(units)
    if (increment := values.get("cov-increment")) is not None and float(increment) > 0:
        obj.cov_increment = float(increment)
    if (value := values.get("present-value")) is not None:
        obj.value_type = type(value).__name__
    if (texts := values.get("state-text")) is not None:
        obj.states = {i: str(t) for i, t in enumerate(texts, 1)}
    elif "inactive-text" in values or "active-text" in values:
        obj.states = {0: _text(values.get("inactive-text")) or "inactive",
                      1: _text(values.get("active-text")) or "active"}
    obj.commandable = values.get("priority-array") is not None


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no response"
    reason = getattr(exc, "apduAbortRejectReason", None) or getattr(exc, "errorCode", None)
    kind = type(exc).__name__.removesuffix("PDU").lower()
    return f"{kind} {reason}" if reason is not None else kind


# --- YAML ------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    """One YAML scalar, quoted only when YAML needs it (°C stays bare, '%' is quoted)."""
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=True, width=1000).removesuffix(
        "\n...\n").strip()


def profile_points(device: DiscoveredDevice) -> dict[str, dict[str, Any]]:
    """The profile's points: key -> the settings written for it, in the order the device lists them."""
    points: dict[str, dict[str, Any]] = {}
    for obj in device.objects:
        key, n = point_id(obj), 2
        while key in points:
            key, n = f"{point_id(obj)}_{n}", n + 1
        point: dict[str, Any] = {"object": obj.object_id}
        if obj.kind in COV_TYPES:
            point["cov"] = True
            if obj.cov_increment is not None:
                point["cov_increment"] = round(obj.cov_increment, 6)
        if obj.commandable:
            point["writable"] = True
        if obj.units and obj.units != "no-units":
            point["unit"] = UNIT_SYMBOLS.get(obj.units, obj.units)
        point["name"] = obj.name
        if obj.description and obj.description != obj.name:
            point["description"] = obj.description
        if obj.states:
            point["enum"] = obj.states
        points[key] = point
    return points


def render_profile(device: DiscoveredDevice, source: str) -> str:
    """A profile file for `device`'s model, with comments saying where each point came from."""
    model = f"{device.vendor_name} {device.model_name}".strip() or f"device {device.instance}"
    lines = [
        f"# {model}: written by `gateway discover bacnet` from device {device.instance} at {source}.",
        "# Point keys come from the object names (or their descriptions when the names are not",
        "# ASCII); rename them freely, the object ids are what the gateway reads. cov: true on",
        "# inputs and values, which change on their own; writable: on commandable objects",
        "# (a priority array), written at priority 8 unless a point says priority:.",
        f"id: {device.model_key}",
        f"name: {_scalar(model)}",
        "system: hvac  # or power, lighting, fire...: what this equipment is on the site",
        "protocol: bacnet",
    ]
    if device.vendor_name:
        lines.append(f"vendor: {_scalar(device.vendor_name)}")
    if device.model_name:
        lines.append(f"model: {_scalar(device.model_name)}")
    lines += ["", "points:"]
    by_key = dict(zip(profile_points(device), device.objects, strict=True))
    for key, point in profile_points(device).items():
        obj = by_key[key]
        note = f"  # present value: {obj.value_type}" if obj.value_type else ""
        lines.append(f"  {key}:{note}")
        for name, value in point.items():
            if name == "enum":
                lines.append("    enum:")
                lines += [f"      {code}: {_scalar(text)}" for code, text in value.items()]
            else:
                lines.append(f"    {name}: {_scalar(value)}")
    lines += ["", "rules: []", ""]
    return "\n".join(lines)


def render_devices(devices: list[DiscoveredDevice]) -> str:
    """A device file with one bacnet_ip entry per device."""
    lines = ["# BACnet devices written by `gateway discover bacnet`; add location: and asset:",
             "# (the equipment ledger needs them) and adjust poll_interval to taste.",
             "devices:"]
    for device in devices:
        lines += [
            f"  - id: {device.device_id}",
            f"    name: {_scalar(device.description or device.name or device.device_id)}",
            f"    profile: {device.model_key}",
            "    connection:",
            "      type: bacnet_ip",
            f"      address: {_scalar(device.address)}",
            f"      device_instance: {device.instance}",
        ]
        if device.max_apdu:
            lines.append(f"      # the device accepts APDUs of {device.max_apdu} bytes, segmentation: {device.segmentation}")
        lines += ["    poll_interval: 10s", ""]
    return "\n".join(lines)


def write_site_files(directory: Path, devices: list[DiscoveredDevice], *, force: bool = False,
                     source: str = "") -> list[Path]:
    """profiles/<model>.yaml per device model and devices/<device>.yaml per device under
    `directory`; refuses (FileExistsError naming them) if any exists, unless `force`."""
    files: dict[Path, str] = {}
    by_model: dict[str, DiscoveredDevice] = {}
    for device in devices:
        if device.error is None:
            by_model.setdefault(device.model_key, device)
    for key, device in by_model.items():
        files[directory / "profiles" / f"{key}.yaml"] = render_profile(device, source or device.address)
    for device in devices:
        if device.error is None:
            files[directory / "devices" / f"{device.device_id}.yaml"] = render_devices([device])
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise FileExistsError(", ".join(str(p) for p in existing))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


# --- one run, and its summary ----------------------------------------------------------


async def run_discovery(local: str, instance: int = 4194300, *, addresses: Iterable[str] = (),
                        low: int | None = None, high: int | None = None, timeout: float = 3.0,
                        progress: Progress | None = None) -> list[DiscoveredDevice]:
    """Who-Is from `local`, then describe every device that answered."""
    try:
        app = local_application(local, instance)
    except (OSError, ValueError) as exc:
        raise DiscoveryError(f"cannot use local address {local}: {exc}") from exc
    try:
        devices = await who_is(app, addresses=addresses, low=low, high=high, timeout=timeout)
        for device in devices:
            await describe(app, device, progress)
        return devices
    finally:
        app.close()


def summary_rows(devices: list[DiscoveredDevice]) -> list[tuple[Any, ...]]:
    """One table row per device: what `gateway discover` prints."""
    rows = []
    for d in devices:
        kinds = Counter(_ABBREVIATIONS.get(obj.kind, obj.kind) for obj in d.objects)
        counts = " ".join(f"{k}:{n}" for k, n in kinds.items())
        writable = sum(o.commandable for o in d.objects)
        note = d.error or f"{counts}; {writable} commandable" + (f"; {d.skipped} not points" if d.skipped else "")
        rows.append((d.instance, d.address, d.name, f"{d.vendor_name} / {d.model_name}", len(d.objects), note))
    return rows
