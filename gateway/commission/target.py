"""Which device a commissioning command talks to: one from the site config, or a
connection written on the command line (`--tcp`, `--rtu`, `--rtu-over-tcp`) with a
profile file. Both end as the same `Device` and `Profile` the daemon would use."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.models import (
    Device,
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
    Profile,
)

Connection = ModbusTcpConnection | ModbusRtuConnection | ModbusRtuOverTcpConnection


class TargetError(ValueError):
    """The command line does not name a device that can be reached; says what would."""


def add_line_options(cmd: argparse.ArgumentParser, *, required: bool) -> None:
    """--tcp / --rtu / --rtu-over-tcp and the serial settings, for probe and scan."""
    where = cmd.add_mutually_exclusive_group(required=required)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP (port 502 unless given)")
    where.add_argument("--rtu", metavar="PORT", help="Modbus RTU on a serial port, e.g. /dev/ttyUSB0")
    where.add_argument("--rtu-over-tcp", metavar="HOST:PORT",
                       help="RTU frames through a serial server (serial-to-Ethernet converter)")
    cmd.add_argument("--baud", type=int, default=9600, help="RTU: baud rate (default 9600)")
    cmd.add_argument("--parity", choices=("N", "E", "O"), default="N",
                     help="RTU: parity (default N)")
    cmd.add_argument("--stopbits", type=int, choices=(1, 2), default=1,
                     help="RTU: stop bits (default 1)")
    cmd.add_argument("--bytesize", type=int, choices=(7, 8), default=8,
                     help="RTU: data bits (default 8)")


def line_given(args: argparse.Namespace) -> bool:
    return bool(args.tcp or args.rtu or args.rtu_over_tcp)


def connection_from_args(args: argparse.Namespace, unit: int, timeout: float | None) -> Connection:
    """The connection the options describe, checked like one written in a device file."""
    fields: dict[str, Any] = {"unit": unit}
    if timeout is not None:
        fields["timeout"] = timeout
    try:
        if args.rtu:
            return ModbusRtuConnection(
                type="modbus_rtu", port=args.rtu, baudrate=args.baud, parity=args.parity,
                stopbits=args.stopbits, bytesize=args.bytesize, **fields)
        if args.rtu_over_tcp:
            host, port = host_port(args.rtu_over_tcp, "--rtu-over-tcp")
            return ModbusRtuOverTcpConnection(type="modbus_rtu_over_tcp", host=host, port=port,
                                              **fields)
        host, port = host_port(args.tcp, "--tcp")
        return ModbusTcpConnection(host=host, port=port, **fields)
    except ValidationError as exc:
        raise TargetError(_first_error(exc)) from None


def host_port(text: str, option: str) -> tuple[str, int]:
    """HOST:PORT (or HOST, port 502; [v6]:PORT) as written after `option`."""
    host, port = text, "502"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"{option} {text!r}: expected HOST:PORT, e.g. 192.168.1.20:502")
    return host, int(port)


def describe(device: Device) -> str:
    """Where a device is, as an engineer writes it: `modbus_rtu /dev/ttyUSB0 9600 8N1 unit 3`."""
    c: Any = device.connection
    if c.type.startswith("modbus"):
        return f"{describe_line(c)} unit {c.unit}"
    if c.type == "bacnet_ip":
        return f"bacnet_ip {c.address} instance {c.device_instance}"
    if c.type == "mqtt":
        return f"mqtt {c.host}:{c.port} {c.base_topic}"
    return str(c.type)


def describe_line(c: Any) -> str:
    """A Modbus line without its unit: `modbus_rtu /dev/ttyUSB0 9600 8N1`."""
    if c.type == "modbus_rtu":
        return f"modbus_rtu {c.port} {c.baudrate} {c.bytesize}{c.parity}{c.stopbits}"
    return f"{c.type} {c.host}:{c.port}"


def load_profile(path: str | Path) -> Profile:
    """One profile file, checked as the site loader checks it: ConfigError with every
    issue at its file:line:col; the id defaults to the file name."""
    from gateway.config.explain import explain
    from gateway.config.yaml_source import load_yaml

    file = Path(path)
    document = load_yaml(file)  # ConfigError for YAML that does not parse
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, None, None, (),
                                       "a profile file holds a mapping (key: value lines)")])
    data = {"id": file.stem, **data} if "id" not in data else data
    try:
        return Profile.from_data(data)
    except ValidationError as exc:
        raise ConfigError(explain(exc, Profile, document, data)) from None


def device_from_args(args: argparse.Namespace, profile: Profile) -> Device:
    """A device of `profile` on the command line's connection; it must be a Modbus map."""
    if profile.protocol != "modbus":
        raise TargetError(
            f"profile {profile.id} is a {profile.protocol} map; --tcp/--rtu/--rtu-over-tcp "
            "reach Modbus devices only: probe a BACnet or MQTT device from the site config "
            "(gateway probe DEVICE -c site.yaml)")
    unit = args.unit if args.unit is not None else 1
    connection = connection_from_args(args, unit, args.timeout)
    try:
        return Device(id=f"{profile.id}_unit_{unit}", profile=profile.id, connection=connection,
                      retries=0)
    except ValidationError as exc:
        raise TargetError(_first_error(exc)) from None


_OPTIONS = {"unit": "--unit", "baudrate": "--baud", "timeout": "--timeout", "host": "host",
            "port": "port", "parity": "--parity", "stopbits": "--stopbits",
            "bytesize": "--bytesize"}


def _first_error(exc: ValidationError) -> str:
    """The first error, named by the option that set the field: `--unit: Input should ...`."""
    error = exc.errors()[0]
    names = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    where = _OPTIONS.get(names[-1], ".".join(names)) if names else ""
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))
