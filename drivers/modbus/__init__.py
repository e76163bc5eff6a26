"""Modbus driver: register maps compiled into read plans, decoded once per poll into a batch.

`decode` holds the codecs (type, byte/word order, scale, offset), `plan` merges a
device's points into the fewest requests per poll group, `bus` runs one request at a time
per serial line or TCP endpoint, `transport` builds the pymodbus client for TCP, RTU over
serial and RTU over TCP, and `driver` runs a device's plans through its bus.
"""

from drivers.modbus.decode import Codec, DecodeError, codec_for, compile_codec
from drivers.modbus.driver import ModbusDriver, ModbusTcpDriver
from drivers.modbus.plan import ReadPlan, Request, compile_plan, compile_plans, describe_plans

__all__ = [
    "Codec",
    "DecodeError",
    "ModbusDriver",
    "ModbusTcpDriver",
    "ReadPlan",
    "Request",
    "codec_for",
    "compile_codec",
    "compile_plan",
    "compile_plans",
    "describe_plans",
]
