"""Which wire a Modbus connection runs on: its bus key, its pymodbus client, its frame timing.

Devices whose connections name the same serial port or the same host:port share one
bus; `bus_key` says which. The clients built here never retry and never reconnect in the
background: the bus does both, on its own schedule, so a dead line costs what the
scheduler allows and no pymodbus task wakes up behind its back.
"""

from __future__ import annotations

from functools import partial

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer import FramerType

from drivers.modbus.bus import Bus
from gateway.config.models import (
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)

Connection = ModbusTcpConnection | ModbusRtuConnection | ModbusRtuOverTcpConnection

# Above 19200 baud the Modbus serial line spec fixes the 3.5-character silence at 1.75 ms.
FAST_LINE_GAP = 0.00175
FAST_LINE_BAUD = 19200

# The serial settings every device on one port must agree on.
_LINE_SETTINGS = ("baudrate", "parity", "stopbits", "bytesize")


def bus_key(connection: Connection) -> str:
    """The name of the bus a connection is on, e.g. "rtu:/dev/ttyUSB0" or "tcp:10.0.0.5:502"."""
    if isinstance(connection, ModbusRtuConnection):
        return f"rtu:{connection.port}"
    if isinstance(connection, ModbusRtuOverTcpConnection):
        return f"rtu-over-tcp:{connection.host}:{connection.port}"
    return f"tcp:{connection.host}:{connection.port}"


def check_same_line(first: Connection, other: Connection, devices: tuple[str, str]) -> None:
    """Raise ValueError when two devices on one serial port disagree on its settings.

    A port has one baud rate; two settings for it is a configuration mistake that would
    otherwise show up as one of the devices never answering.
    """
    if not isinstance(first, ModbusRtuConnection) or not isinstance(other, ModbusRtuConnection):
        return
    for setting in _LINE_SETTINGS:
        mine, theirs = getattr(first, setting), getattr(other, setting)
        if mine != theirs:
            raise ValueError(
                f"devices {devices[0]} and {devices[1]} share serial port {first.port} but "
                f"differ in {setting} ({mine} vs {theirs}); a port runs at one setting, "
                "give both devices the same"
            )


def frame_gap(connection: Connection) -> float:
    """The silence RTU needs between frames: 3.5 character times, 1.75 ms above 19200 baud.

    A character is a start bit, the data bits, a parity bit unless parity is N, and the
    stop bits. RTU over TCP has no baud rate in its config: the serial server's line is
    unknown, so it gets the fast-line minimum. Modbus TCP frames carry their length and
    need no gap.
    """
    if isinstance(connection, ModbusRtuConnection):
        if connection.baudrate > FAST_LINE_BAUD:
            return FAST_LINE_GAP
        bits = 1 + connection.bytesize + (connection.parity != "N") + connection.stopbits
        return 3.5 * bits / connection.baudrate
    if isinstance(connection, ModbusRtuOverTcpConnection):
        return FAST_LINE_GAP
    return 0.0


def build_client(connection: Connection, timeout: float) -> ModbusBaseClient:
    """A fresh pymodbus client for the connection; `timeout` bounds connecting.

    pymodbus uses the same number as its request timeout. The bus bounds every request
    with the device's own, shorter timeout, so pymodbus's is only a backstop; its retries
    are off and so is its reconnect loop.
    """
    if isinstance(connection, ModbusRtuConnection):
        return AsyncModbusSerialClient(
            connection.port,
            framer=FramerType.RTU,
            baudrate=connection.baudrate,
            parity=connection.parity,
            stopbits=connection.stopbits,
            bytesize=connection.bytesize,
            timeout=timeout,
            retries=0,
            reconnect_delay=0,
        )
    framer = (
        FramerType.RTU if isinstance(connection, ModbusRtuOverTcpConnection) else FramerType.SOCKET
    )
    return AsyncModbusTcpClient(
        connection.host,
        port=connection.port,
        framer=framer,
        timeout=timeout,
        retries=0,
        reconnect_delay=0,
    )


MAX_RTU_FRAME = 256  # bytes: the longest RTU frame
UNKNOWN_LINE_LATE = 0.1  # seconds: RTU over TCP, behind a serial server of unknown speed


def late_reply_window(connection: Connection) -> float:
    """How long a reply may still arrive after its request timed out, on RTU.

    RTU frames carry no transaction id: a late answer would be taken as the answer to the
    next request to the same unit, so after a timeout the bus stays quiet this long, time
    for the longest frame to finish on the line. Modbus TCP matches by transaction id.
    """
    if isinstance(connection, ModbusRtuConnection):
        bits = 1 + connection.bytesize + (connection.parity != "N") + connection.stopbits
        return MAX_RTU_FRAME * bits / connection.baudrate + frame_gap(connection)
    if isinstance(connection, ModbusRtuOverTcpConnection):
        return UNKNOWN_LINE_LATE
    return 0.0


def open_bus(connection: Connection) -> Bus:
    """A bus for the line or endpoint `connection` names; it connects on its first request."""
    return Bus(
        bus_key(connection), partial(build_client, connection), frame_gap(connection),
        late_window=late_reply_window(connection),
    )
