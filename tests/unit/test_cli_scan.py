"""`gateway scan modbus`: the ids that answer, an exception counting as an answer except a
gateway's "nothing behind me"; the unit list as written, checked against the line."""

from __future__ import annotations

import argparse

import pytest
from modbus_memory import MemoryLine

from gateway.cli import main
from gateway.commission.scan import check_units, parse_units, render, scan
from gateway.commission.target import connection_from_args


def _tcp(timeout: float = 0.05):
    args = argparse.Namespace(tcp="memory:502", rtu=None, rtu_over_tcp=None, baud=9600,
                              parity="N", stopbits=1, bytesize=8)
    return connection_from_args(args, 1, timeout)


def test_unit_lists_as_engineers_write_them() -> None:
    assert parse_units("1-5") == [1, 2, 3, 4, 5]
    assert parse_units("3, 1,2-4") == [3, 1, 2, 4]  # each once, in the order written
    for wrong in ("1-", "a", "5-2", "1-300"):
        with pytest.raises(ValueError):
            parse_units(wrong)


def test_an_rtu_line_has_no_unit_0_to_answer() -> None:
    args = argparse.Namespace(tcp=None, rtu="/dev/ttyUSB0", rtu_over_tcp=None, baud=9600,
                              parity="N", stopbits=1, bytesize=8)
    with pytest.raises(ValueError, match="unit 0 cannot answer on an RTU line"):
        check_units([0, 1], connection_from_args(args, 1, 0.2))
    check_units([0, 1], _tcp())  # TCP devices often answer at unit 0 or 255


async def test_the_ids_that_answer_are_found_and_an_exception_is_an_answer() -> None:
    line = MemoryLine({2: {"holding": [0x1234]}, 5: {"holding": [7]}},
                      silent={1, 3, 6}, refusing={4: 2, 7: 11, 8: 10})
    result = await scan(_tcp(), list(range(1, 9)), bus=line.bus())
    assert [a.unit for a in result.found] == [2, 4, 5]
    assert [(a.words, a.exception_code) for a in result.found] == [([0x1234], None), (None, 2), ([7], None)]
    assert result.gateway_absent == [7, 8]  # a TCP gateway's "no device behind me"
    assert [unit for unit, *_ in line.wire] == list(range(1, 9))  # one request each
    text = render(result, "modbus_tcp memory:502")
    assert text.startswith("3 of 8 unit ids answered on modbus_tcp memory:502 (holding 0")
    assert "0x1234 (4660)" in text and "exception 2 (illegal_address)" in text
    assert "no device at 2 of them" in text


async def test_the_table_and_register_asked_are_the_ones_read() -> None:
    line = MemoryLine({1: {"input": [0, 0, 0, 42], "coil": [0, 1]}})
    by_input = await scan(_tcp(), [1], table="input", register=3, bus=line.bus())
    assert by_input.found[0].words == [42]
    by_coil = await scan(_tcp(), [1], table="coil", register=1, count=1, bus=line.bus())
    assert by_coil.found[0].answer == "1"
    assert line.wire == [(1, "input", 3, 1), (1, "coil", 1, 1)]


def test_a_line_that_cannot_be_opened_is_a_clear_error(capsys) -> None:
    assert main(["scan", "modbus", "--rtu", "/dev/ttyNOSUCHPORT", "--units", "1-3"]) == 2
    assert "cannot connect to /dev/ttyNOSUCHPORT" in capsys.readouterr().err


def test_a_unit_list_mistake_exits_2(capsys) -> None:
    assert main(["scan", "modbus", "--tcp", "127.0.0.1:9", "--units", "10-1"]) == 2
    assert "unit ids run from 0 to 255, low to high" in capsys.readouterr().err
