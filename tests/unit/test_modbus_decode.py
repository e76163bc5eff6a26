"""Codecs: every data type in every byte/word order against known encodings, then scale,
offset, ranges, and the types that are not plain numbers (register bits, strings, BCD, coils)."""

from __future__ import annotations

import math
import random
import struct

import pytest

from drivers.modbus.decode import (
    BYTE_ORDERS,
    DATA_TYPES,
    DecodeError,
    codec_for,
    compile_codec,
)
from gateway.config.models import ModbusPoint

# (type, value, {order: registers}, codec options) written out by hand from the big-endian bytes
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
# Not plain numbers: the options say how the point is read.
KNOWN_OTHER = [
    ("bcd16", 1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}, {}),
    ("bcd32", 12345678, {
        "ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234],
        "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412],
    }, {}),
    # bit 9 of a register is 0x0200 as a number; byte-swapped orders hold it as 0x0002
    ("bool", True, {"ABCD": [0x0200], "CDAB": [0x0200], "BADC": [0x0002], "DCBA": [0x0002]}, {"bit": 9}),
    # strings: the first register holds the first two characters in every order (no word
    # swap); byte-swapped orders hold them low byte first
    ("string", "AB12CD", {
        "ABCD": [0x4142, 0x3132, 0x4344], "CDAB": [0x4142, 0x3132, 0x4344],
        "BADC": [0x4241, 0x3231, 0x4443], "DCBA": [0x4241, 0x3231, 0x4443],
    }, {"length": 3}),
]
CASES = [
    (t, v, order, regs, {})
    for t, v, table in KNOWN
    for order, regs in table.items()
] + [(t, v, order, regs, opts) for t, v, table, opts in KNOWN_OTHER for order, regs in table.items()]
WRITABLE_CASES = [case for case in CASES if "bit" not in case[4]]


def test_the_known_encodings_cover_every_type_and_order():
    assert {t for t, _v, _o, _r, _opts in CASES} == set(DATA_TYPES)
    assert {o for _t, _v, o, _r, _opts in CASES} == set(BYTE_ORDERS)
    assert len(CASES) == len(DATA_TYPES) * len(BYTE_ORDERS)


@pytest.mark.parametrize(("data_type", "value", "order", "registers", "options"), CASES)
def test_registers_decode_to_the_known_value(data_type, value, order, registers, options):
    decoded = compile_codec(data_type, order, **options).decode(registers)
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(("data_type", "value", "order", "registers", "options"), WRITABLE_CASES)
def test_a_value_encodes_to_the_known_registers(data_type, value, order, registers, options):
    assert compile_codec(data_type, order, **options).encode(value) == registers


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


# --- bool from a bit of a register ---------------------------------------------------


@pytest.mark.parametrize("order", BYTE_ORDERS)
def test_each_bit_of_a_register_reads_alone_in_every_order(order):
    for bit in range(16):
        word = 1 << bit
        stored = ((word & 0xFF) << 8) | (word >> 8) if order in ("BADC", "DCBA") else word
        assert compile_codec("bool", order, bit=bit).decode([stored]) is True
        assert compile_codec("bool", order, bit=bit).decode([~stored & 0xFFFF]) is False


def test_a_register_bit_cannot_be_written_alone():
    with pytest.raises(ValueError, match="whole register"):
        compile_codec("bool", bit=3).encode(True)


def test_a_register_bool_needs_its_bit():
    with pytest.raises(ValueError, match="bit"):
        compile_codec("bool")


# --- strings ---------------------------------------------------------------------------


def test_a_string_is_cut_at_the_first_nul_and_loses_trailing_spaces():
    codec = compile_codec("string", length=4)
    assert codec.decode([0x5046, 0x2D31, 0x2020, 0x2020]) == "PF-1"  # "PF-1    "
    assert codec.decode([0x5046, 0x2D31, 0x0000, 0x0000]) == "PF-1"
    assert codec.decode([0x5046, 0x0058, 0x5858, 0x5858]) == "PF"  # garbage after the NUL
    assert codec.decode([0, 0, 0, 0]) == ""


def test_a_utf8_string_holds_chinese_text():
    codec = compile_codec("string", length=4, encoding="utf-8")
    words = [0xE6B3, 0xB5E7, 0xAB99, 0x0000]  # 泵站
    assert codec.decode(words) == "泵站"
    assert codec.encode("泵站") == words


def test_bytes_that_are_not_the_encoding_are_decode_errors():
    with pytest.raises(DecodeError):
        compile_codec("string", length=1).decode([0x41C8])  # 0xC8 is not ASCII
    with pytest.raises(DecodeError):
        compile_codec("string", length=1, encoding="utf-8").decode([0xE6B3])  # half a character


def test_a_string_encodes_padded_with_nuls_and_refuses_what_does_not_fit():
    codec = compile_codec("string", "BADC", length=3)
    assert codec.encode("AB1") == [0x4241, 0x0031, 0x0000]
    with pytest.raises(ValueError, match="6 bytes"):
        codec.encode("ABCDEFG")
    with pytest.raises(ValueError, match="utf-8"):
        codec.encode("泵")
    with pytest.raises(ValueError, match="not text"):
        codec.encode(12)


def test_a_string_needs_its_length():
    with pytest.raises(ValueError, match="length"):
        compile_codec("string")


# --- BCD -----------------------------------------------------------------------------


@pytest.mark.parametrize(("data_type", "words"), [("bcd16", [0x12A4]), ("bcd32", [0x1234, 0x567F])])
def test_a_nibble_above_9_is_a_decode_error(data_type, words):
    with pytest.raises(DecodeError, match="nibble"):
        compile_codec(data_type).decode(words)


def test_bcd_is_scaled_like_any_integer():
    # an old energy meter: 8 BCD digits of hundredths of a kWh, low word first
    assert compile_codec("bcd32", "CDAB", scale=0.01).decode([0x5678, 0x0012]) == 125678.0 / 100
    assert compile_codec("bcd32", "CDAB", scale=0.01).encode(1256.78) == [0x5678, 0x0012]


@pytest.mark.parametrize(("data_type", "value"), [("bcd16", 10000), ("bcd16", -1), ("bcd32", 10**8)])
def test_bcd_refuses_values_with_more_digits_than_it_holds(data_type, value):
    with pytest.raises(ValueError, match="out of range"):
        compile_codec(data_type).encode(value)


# --- coils and discrete inputs -------------------------------------------------------


def test_a_coil_reads_and_writes_one_bit():
    codec = compile_codec("bool", table="coil")
    assert codec.decode([1]) is True and codec.decode([0]) is False
    assert codec.encode(True) == [True]
    assert codec.encode(0) == [False]
    with pytest.raises(ValueError, match="true or false"):
        codec.encode(2)
    with pytest.raises(ValueError, match="true or false"):
        codec.encode("on")


def test_a_discrete_input_cannot_be_written():
    with pytest.raises(ValueError, match="read-only"):
        compile_codec("bool", table="discrete").encode(True)


# --- engineering range ----------------------------------------------------------------


def test_a_write_outside_min_and_max_is_refused_naming_the_range():
    codec = compile_codec("uint16", scale=0.01, minimum=0, maximum=50)
    assert codec.encode(50) == [5000]
    with pytest.raises(ValueError, match=r"allowed range 0\.\.50"):
        codec.encode(50.5)
    with pytest.raises(ValueError, match="allowed range >= 0"):
        compile_codec("int16", minimum=0).encode(-1)
    with pytest.raises(ValueError, match="allowed range <= 1.6"):
        compile_codec("float32", maximum=1.6).encode(2)


def test_min_and_max_bound_numbers_only():
    with pytest.raises(ValueError, match="no range"):
        compile_codec("string", length=2, minimum=0)
    with pytest.raises(ValueError, match="above"):
        compile_codec("uint16", minimum=5, maximum=1)


def test_codec_for_reads_the_point_and_its_own_order_wins():
    point = ModbusPoint(address=0, type="bcd16", order="BADC", scale=0.1, min=0, max=100)
    codec = codec_for(point, "ABCD")
    assert codec.decode([0x3412]) == 123.4
    assert (codec.low, codec.high, codec.bounded) == (0, 100, True)
    status = codec_for(ModbusPoint(address=4, bit=15), "DCBA")
    assert status.decode([0x0080]) is True
