"""Modbus driver: register maps compiled into read plans, decoded once per poll into a batch.

`decode` holds the codecs (type, byte/word order, scale, offset), `plan` merges a
device's points into the fewest requests, `driver` runs the plan over Modbus TCP.
"""

from drivers.modbus.decode import Codec, DecodeError, codec_for, compile_codec
from drivers.modbus.driver import ModbusTcpDriver
from drivers.modbus.plan import ReadPlan, Request, compile_plan

__all__ = [
    "Codec",
    "DecodeError",
    "ModbusTcpDriver",
    "ReadPlan",
    "Request",
    "codec_for",
    "compile_codec",
    "compile_plan",
]
