"""`gateway probe`: each point's value and the words its request read, through the
daemon's own driver and plan; the device and connection from the config or the command
line, with mistakes named."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from modbus_memory import MemoryLine

from drivers.modbus.plan import compile_plans
from gateway.cli import main
from gateway.commission.probe import ModbusProber, render
from gateway.commission.target import (
    TargetError,
    connection_from_args,
    device_from_args,
    host_port,
    load_profile,
)
from gateway.commission.terminal import Progress
from gateway.config.errors import ConfigError
from gateway.config.models import Device, Profile

PUMP = Profile.from_data({
    "id": "pump", "name": "pump", "system": "water_supply",
    "points": {
        "pressure": {"address": 0, "scale": 0.001, "unit": "MPa", "name": "出水压力"},
        "fault": {"address": 1, "enum": {0: "无故障", 11: "电机过载"}},
        "run_hours": {"address": 10, "type": "uint32", "unit": "h"},
        "power": {"table": "input", "address": 0, "type": "float32", "unit": "kW"},
        "relay": {"table": "coil", "address": 3},
        "energy": {"table": "input", "address": 100, "type": "uint32", "poll_group": "slow"},
    },
})
HOLDING = [452, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0x0001, 0x86A0]  # 0.452 MPa, Err11, 100000 h
INPUT = [0x42F6, 0xE979]  # 123.456 as float32 ABCD


def _device(unit: int = 1) -> Device:
    return Device.model_validate({
        "id": "pump_1", "profile": "pump", "poll_groups": {"slow": "60s"},
        "connection": {"type": "modbus_tcp", "host": "memory", "unit": unit, "timeout": "100ms"},
    })


async def _probe(line: MemoryLine, unit: int = 1):
    prober = ModbusProber(_device(unit), PUMP, line.bus())
    try:
        with Progress("probe", prober.steps) as progress:
            result = await prober.read(progress)
        return result, progress
    finally:
        await prober.close()


async def test_each_point_shows_its_value_and_the_words_its_request_read() -> None:
    line = MemoryLine({1: {"holding": HOLDING, "input": INPUT + [0] * 98 + [0, 4200],
                           "coil": [0, 0, 0, 1]}})
    result, progress = await _probe(line)
    rows = {row.point: row for row in result.points}
    assert result.answered and result.error is None
    assert [row.point for row in result.points] == list(PUMP.points)  # profile order
    assert rows["pressure"].value == pytest.approx(0.452)
    assert (rows["pressure"].raw, rows["pressure"].words) == ("0x01C4", [452])
    assert (rows["fault"].value, rows["fault"].text) == (11, "电机过载")
    assert (rows["run_hours"].value, rows["run_hours"].raw) == (100000, "0x0001 0x86A0")
    assert rows["power"].value == pytest.approx(123.456, rel=1e-6)
    assert rows["power"].raw == "0x42F6 0xE979"
    assert (rows["relay"].value, rows["relay"].raw) == (True, "1")
    assert (rows["energy"].value, rows["energy"].raw) == (4200, "0x0000 0x1068")
    # the plans' requests, each once: both poll groups are read
    steps = sum(len(plan.requests) for plan in compile_plans(_device(), PUMP).values())
    assert progress.done == steps == len(result.requests) == len(line.wire)


async def test_a_refused_request_shows_its_exception_and_the_device_still_answered() -> None:
    line = MemoryLine({1: {"holding": HOLDING, "input": INPUT, "coil": [0, 0, 0, 1]}})
    result, _ = await _probe(line)  # input 100 is beyond what unit 1 holds: exception 2
    energy = next(row for row in result.points if row.point == "energy")
    assert result.answered
    assert (energy.quality, energy.value, energy.raw) == ("device_exception", None, "exception 2")
    refused = [r for r in result.requests if r.words is None]
    assert [(r.request, r.outcome) for r in refused] == [
        ("input 100-101", "exception 2 (illegal_address)")]
    text = render(result)
    assert "(1 with an exception)" in text and "input 100-101: exception 2" in text


async def test_a_device_that_answers_nothing_costs_one_timeout_and_says_so() -> None:
    line = MemoryLine({}, silent={7})
    result, _ = await _probe(line, unit=7)
    assert not result.answered
    assert "no answer" in (result.error or "")
    assert {row.quality for row in result.points} == {"comm_failure"}
    assert len(line.wire) == 1  # the slow group's plan was not tried after the first failed
    assert "NO ANSWER" in render(result)


# --- the target: config or command line ------------------------------------------------------


def _line_args(**given) -> argparse.Namespace:
    base = {"tcp": None, "rtu": None, "rtu_over_tcp": None, "baud": 9600, "parity": "N",
            "stopbits": 1, "bytesize": 8, "unit": None, "timeout": None}
    return argparse.Namespace(**{**base, **given})


def test_host_and_port_as_engineers_write_them() -> None:
    assert host_port("192.168.1.20:1502", "--tcp") == ("192.168.1.20", 1502)
    assert host_port("plc.local", "--tcp") == ("plc.local", 502)
    assert host_port("[fe80::1]:502", "--tcp") == ("fe80::1", 502)
    with pytest.raises(TargetError, match="--tcp '10.0.0.5:http': expected HOST:PORT"):
        host_port("10.0.0.5:http", "--tcp")


def test_a_serial_connection_takes_the_line_settings_and_names_a_wrong_one() -> None:
    rtu = connection_from_args(_line_args(rtu="/dev/ttyUSB0", baud=19200, parity="E"), 3, 0.3)
    assert (rtu.port, rtu.baudrate, rtu.parity, rtu.unit, rtu.timeout) == (
        "/dev/ttyUSB0", 19200, "E", 3, 0.3)
    with pytest.raises(TargetError, match="^--unit: .*247"):
        connection_from_args(_line_args(rtu="/dev/ttyUSB0"), 250, None)


def test_a_profile_file_error_is_located(tmp_path: Path) -> None:
    bad = tmp_path / "vfd.yaml"
    bad.write_text("name: vfd\nsystem: water_supply\npoints:\n  speed: {address: -1}\n",
                   encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_profile(bad)
    assert f"{bad.name}:4" in str(caught.value.issues[0])
    good = tmp_path / "vfd_ok.yaml"
    good.write_text("name: vfd\nsystem: water_supply\npoints:\n  speed: {address: 1}\n",
                    encoding="utf-8")
    assert load_profile(good).id == "vfd_ok"  # the id defaults to the file name


def test_a_bacnet_map_cannot_be_probed_over_modbus() -> None:
    ahu = Profile.from_data({"id": "ahu", "name": "ahu", "system": "hvac", "protocol": "bacnet",
                             "points": {"supply_temp": {"object": "analog-input,1"}}})
    with pytest.raises(TargetError, match="bacnet map.*Modbus devices only"):
        device_from_args(_line_args(tcp="10.0.0.5"), ahu)


def test_the_command_line_says_what_to_give(capsys) -> None:
    assert main(["probe"]) == 2
    assert "name a DEVICE of the config" in capsys.readouterr().err
    assert main(["probe", "pump_b1_1", "--tcp", "127.0.0.1:502"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_device_not_in_the_config_is_named_with_a_suggestion(capsys) -> None:
    assert main(["probe", "pump_b1_l", "-c", "config/site.yaml"]) == 2
    err = capsys.readouterr().err
    assert "no device 'pump_b1_l'" in err and "pump_b1_1" in err


def test_json_says_a_device_that_is_not_there_did_not_answer(capsys) -> None:
    # a port nothing listens on: the JSON still says what was tried, and the exit code is 1
    code = main(["probe", "--profile", "config/profiles/booster_pump.yaml", "--tcp",
                 "127.0.0.1:9", "--timeout", "0.1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["answered"] is False and out["connection"] == "modbus_tcp 127.0.0.1:9 unit 1"
    assert {p["quality"] for p in out["points"]} == {"comm_failure"}
