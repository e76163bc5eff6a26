"""Read plans: the fewest requests for a register map, within the gap and size limits."""

from __future__ import annotations

import struct

import pytest

from drivers.modbus.plan import compile_plan
from gateway.config.models import Device, ModbusPoint, ModbusTcpConnection, Profile


def device() -> Device:
    return Device(id="dev", profile="p", connection=ModbusTcpConnection(host="127.0.0.1"))


def profile(points: dict[str, dict], order: str = "ABCD") -> Profile:
    return Profile(
        id="p", name="p", system="test", order=order,
        points={name: ModbusPoint(**spec) for name, spec in points.items()},
    )


def spans(plan) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in plan.requests]


BOOSTER_PUMP = {
    "frequency": {"address": 0, "scale": 0.01, "unit": "Hz"},
    "current": {"address": 1, "scale": 0.1, "unit": "A"},
    "outlet_pressure": {"address": 2, "scale": 0.001, "unit": "MPa"},
    "running": {"address": 3},
    "fault_code": {"address": 4},
    "run_hours": {"address": 10, "type": "uint32", "unit": "h"},
    "starts": {"address": 12, "type": "uint32"},
    "setpoint_pressure": {"address": 20, "scale": 0.001, "unit": "MPa", "writable": True},
}
ENERGY_METER = {
    name: {"table": "input", "address": address, "type": "float32"}
    for name, address in [
        ("voltage_l1", 0), ("voltage_l2", 2), ("voltage_l3", 4), ("current_l1", 6),
        ("current_l2", 8), ("current_l3", 10), ("total_power", 52), ("frequency", 70),
        ("energy_import", 342),
    ]
}


def test_contiguous_points_are_one_request():
    plan = compile_plan(device(), profile({
        "a": {"address": 0}, "b": {"address": 1}, "c": {"address": 2, "type": "uint32"},
    }))
    assert spans(plan) == [("holding", 0, 4)]


def test_the_booster_pump_is_read_in_one_request_across_its_small_gaps():
    plan = compile_plan(device(), profile(BOOSTER_PUMP))
    assert spans(plan) == [("holding", 0, 21)]
    assert plan.points == tuple(BOOSTER_PUMP)


def test_the_energy_meter_skips_the_long_gaps_and_bridges_the_short_one():
    plan = compile_plan(device(), profile(ENERGY_METER))
    # 12..51 (40 unused) and 72..341 split; 54..69 (16 unused) is bridged
    assert spans(plan) == [("input", 0, 12), ("input", 52, 20), ("input", 342, 2)]


def test_a_gap_of_max_gap_registers_is_bridged_and_one_more_splits():
    bridged = compile_plan(device(), profile({"a": {"address": 0}, "b": {"address": 17}}))
    assert spans(bridged) == [("holding", 0, 18)]
    split = compile_plan(device(), profile({"a": {"address": 0}, "b": {"address": 18}}))
    assert spans(split) == [("holding", 0, 1), ("holding", 18, 1)]


def test_max_gap_is_a_parameter():
    points = {"a": {"address": 0}, "b": {"address": 1}, "c": {"address": 3}}
    assert spans(compile_plan(device(), profile(points), max_gap=0)) == [
        ("holding", 0, 2), ("holding", 3, 1),
    ]
    assert spans(compile_plan(device(), profile(points), max_gap=1)) == [("holding", 0, 4)]


def test_no_request_is_longer_than_125_registers():
    points = {f"p{i}": {"address": i} for i in range(300)}
    plan = compile_plan(device(), profile(points))
    assert spans(plan) == [("holding", 0, 125), ("holding", 125, 125), ("holding", 250, 50)]


def test_a_multi_register_point_is_never_split_across_requests():
    wide = {"max_gap": 200}
    fits = compile_plan(device(), profile({"a": {"address": 0}, "b": {"address": 123, "type": "float32"}}), **wide)
    assert spans(fits) == [("holding", 0, 125)]
    spills = compile_plan(device(), profile({"a": {"address": 0}, "b": {"address": 124, "type": "float32"}}), **wide)
    assert spans(spills) == [("holding", 0, 1), ("holding", 124, 2)]


def test_holding_and_input_tables_are_read_separately():
    plan = compile_plan(device(), profile({
        "in": {"table": "input", "address": 0},
        "hold": {"table": "holding", "address": 0},
        "hold2": {"table": "holding", "address": 1},
    }))
    assert spans(plan) == [("holding", 0, 2), ("input", 0, 1)]


def test_overlapping_points_share_their_registers():
    plan = compile_plan(device(), profile({
        "low_word": {"address": 11}, "whole": {"address": 10, "type": "uint32"},
    }))
    assert spans(plan) == [("holding", 10, 2)]
    assert sorted((i, off) for i, off, _c in plan.requests[0].reads) == [(0, 1), (1, 0)]


def test_points_keep_profile_order_in_the_batch_whatever_their_addresses():
    plan = compile_plan(device(), profile({"z": {"address": 5}, "a": {"address": 1}}))
    assert plan.points == ("z", "a")
    values = [None, None]
    assert spans(plan) == [("holding", 1, 5)]
    plan.requests[0].decode_into([11, 0, 0, 0, 55], values)
    assert values == [55, 11]


def test_a_request_decodes_mixed_orders_into_the_batch_and_reports_nan_points():
    plan = compile_plan(device(), profile({
        "big": {"address": 0, "type": "float32"},
        "swapped": {"address": 2, "type": "float32", "order": "CDAB"},
        "broken": {"address": 4, "type": "float32"},
        "scaled": {"address": 6, "scale": 0.1},
    }))
    values: list = [None] * 4
    failed = plan.requests[0].decode_into([0x42F6, 0xE979, 0xE979, 0x42F6, 0x7FC0, 0, 123], values)
    assert values[0] == values[1] == 123.456
    assert values[2] is None and failed == [2]
    assert values[3] == 12.3


def test_describe_names_each_request_its_span_and_its_points():
    plan = compile_plan(device(), profile(BOOSTER_PUMP))
    (line,) = plan.describe()
    assert line.startswith("holding 0-20 (21 registers, 11 unused): frequency@0, current@1")
    assert "setpoint_pressure@20" in line


def test_refs_say_where_each_point_lives_for_writes():
    plan = compile_plan(device(), profile(BOOSTER_PUMP))
    ref = plan.refs["setpoint_pressure"]
    assert (ref.table, ref.address, ref.writable) == ("holding", 20, True)
    assert ref.codec.encode(0.5) == [500]


def test_a_point_running_past_the_last_register_is_refused():
    with pytest.raises(ValueError, match="65535"):
        compile_plan(device(), profile({"a": {"address": 65535, "type": "uint32"}}))


def test_a_thousand_float32_points_pack_into_full_requests_and_decode_in_place():
    # Speed is measured by scripts/bench, not here; this pins the shape the speed relies on.
    points = {f"p{i}": {"address": 2 * i, "type": "float32"} for i in range(1000)}
    plan = compile_plan(device(), profile(points))
    assert {r.count for r in plan.requests[:-1]} == {124}  # 62 float32s; a 63rd would need 126
    words = list(struct.unpack(">250H", struct.pack(">125f", *range(125))))
    values: list = [None] * 1000
    for request in plan.requests:
        request.decode_into(words[: request.count], values)
    assert (values[1], values[62], values[999]) == (1.0, 0.0, 7.0)
