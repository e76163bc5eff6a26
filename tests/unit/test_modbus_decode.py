"""Codecs: every data type in every byte/word order against known encodings, then scale and offset."""

from __future__ import annotations

import math
import random
import struct

import pytest

from drivers.modbus.decode import BYTE_ORDERS, DATA_TYPES, DecodeError, compile_codec

# (type, value, {order: registers}) written out by hand from the big-endian bytes
KNOWN = [
    ("int16", -1234, {"ABCD": [0xFB2E], "CDAB": [0xFB2E], "BADC": [0x2EFB], "DCBA": [0x2EFB]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("int32", -2, {
        "ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF],
        "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF],
    }),
    ("uint32", 0x12345678, {
        "ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234],
        "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412],
    }),
    ("int64", -0x0102030405060708, {  # 0xFEFDFCFBFAF9F8F8
        "ABCD": [0xFEFD, 0xFCFB, 0xFAF9, 0xF8F8], "CDAB": [0xF8F8, 0xFAF9, 0xFCFB, 0xFEFD],
        "BADC": [0xFDFE, 0xFBFC, 0xF9FA, 0xF8F8], "DCBA": [0xF8F8, 0xF9FA, 0xFBFC, 0xFDFE],
    }),
    ("uint64", 0x0102030405060708, {
        "ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
        "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
    }),
    ("float32", 123.456, {
        "ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
        "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642],
    }),
    ("float64", 1.5, {
        "ABCD": [0x3FF8, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF8],
        "BADC": [0xF83F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF83F],
    }),
]
CASES = [(t, v, order, regs) for t, v, table in KNOWN for order, regs in table.items()]


def test_the_known_encodings_cover_every_type_and_order():
    assert {t for t, _v, _o, _r in CASES} == set(DATA_TYPES)
    assert {o for _t, _v, o, _r in CASES} == set(BYTE_ORDERS)
    assert len(CASES) == len(DATA_TYPES) * len(BYTE_ORDERS)


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), CASES)
def test_registers_decode_to_the_known_value(data_type, value, order, registers):
    decoded = compile_codec(data_type, order).decode(registers)
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), CASES)
def test_a_value_encodes_to_the_known_registers(data_type, value, order, registers):
    assert compile_codec(data_type, order).encode(value) == registers


def test_scale_applies_to_the_raw_number_and_rounds_to_the_scales_places():
    assert compile_codec("uint16", scale=0.01).decode([4512]) == 45.12
    assert compile_codec("uint16", scale=0.001).decode([452]) == 0.452
    assert compile_codec("int16", scale=0.1).decode([0xFFCC]) == -5.2


def test_offset_is_added_after_scaling():
    # a common temperature encoding: raw tenths of a degree above -40 °C
    assert compile_codec("uint16", scale=0.1, offset=-40).decode([650]) == 25.0
    assert compile_codec("uint16", offset=0.5).decode([3]) == 3.5


def test_integers_stay_integers_without_scale_or_offset():
    value = compile_codec("uint32").decode([0x0001, 0x86A0])
    assert value == 100000 and type(value) is int
    scaled = compile_codec("uint16", scale=2.0).decode([3])
    assert scaled == 6 and type(scaled) is float


def test_floats_are_scaled_too():
    assert compile_codec("float32", scale=0.001).decode([0x42F6, 0xE979]) == 0.123456
    assert compile_codec("float64", scale=2.0, offset=1.0).decode([0x3FF8, 0, 0, 0]) == 4.0


def test_a_float32_reads_as_the_shortest_decimal_that_is_the_same_float32():
    codec = compile_codec("float32")
    rng = random.Random(5)
    for _ in range(2000):
        raw = struct.unpack(">f", struct.pack(">f", rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-6, 6)))[0]
        value = codec.decode(list(struct.unpack(">2H", struct.pack(">f", raw))))
        assert struct.pack(">f", value) == struct.pack(">f", raw)
        assert len(repr(value)) <= len(repr(raw))
    assert codec.decode([0x4773, 0x1B86]) == 62235.523  # W, as the meter's display shows it


@pytest.mark.parametrize("registers", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_nan_and_infinite_floats_are_decode_errors(registers):
    with pytest.raises(DecodeError):
        compile_codec("float32").decode(registers)


def test_nan_float64_is_a_decode_error_in_any_order():
    nan_words = list(struct.unpack(">4H", struct.pack(">d", math.nan)))
    with pytest.raises(DecodeError):
        compile_codec("float64").decode(nan_words)
    with pytest.raises(DecodeError):
        compile_codec("float64", "CDAB").decode(nan_words[::-1])


def test_encode_undoes_scale_and_offset():
    assert compile_codec("uint16", scale=0.001).encode(0.45) == [450]
    assert compile_codec("uint16", scale=0.1, offset=-40).encode(25.0) == [650]
    assert compile_codec("int16", scale=0.1).encode(-5.2) == [0xFFCC]
    assert compile_codec("uint16").encode(True) == [1]


@pytest.mark.parametrize(
    ("data_type", "scale", "value"),
    [
        ("uint16", 0.001, 70.0),  # 70000 raw does not fit 16 bits
        ("uint16", 1.0, -1),
        ("int16", 1.0, 40000),
        ("uint32", 1.0, 2**32),
        ("float32", 1.0, 1e39),
        ("float64", 1.0, math.inf),
        ("uint16", 1.0, "12"),
        ("uint16", 1.0, None),
    ],
)
def test_encode_refuses_values_the_type_cannot_hold(data_type, scale, value):
    with pytest.raises(ValueError):
        compile_codec(data_type, scale=scale).encode(value)


def test_unknown_type_order_or_zero_scale_is_refused_at_compile_time():
    with pytest.raises(ValueError, match="data type"):
        compile_codec("int24")
    with pytest.raises(ValueError, match="byte order"):
        compile_codec("uint16", "ACBD")
    with pytest.raises(ValueError, match="scale"):
        compile_codec("uint16", scale=0)


def test_decode_from_a_packed_request_buffer_at_an_offset():
    codec = compile_codec("float32", "CDAB")
    words = [0xAAAA, 0xE979, 0x42F6]
    buffer = struct.pack("<3H", *words)  # CDAB packs words little-endian
    assert codec.words_little
    assert codec.from_buffer(buffer, 2) == 123.456
