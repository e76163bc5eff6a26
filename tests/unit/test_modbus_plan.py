"""Read plans: the fewest requests for a register map, within the device's limits, per poll group."""

from __future__ import annotations

import struct

import pytest

from drivers.modbus.plan import compile_plan, compile_plans, describe_plans
from gateway.batch import Quality
from gateway.config.models import Device, ModbusPoint, ModbusTcpConnection, Profile, ReadLimits


def device(**fields) -> Device:
    return Device(id="dev", profile="p", connection=ModbusTcpConnection(host="127.0.0.1"), **fields)


def profile(points: dict[str, dict], order: str = "ABCD", **fields) -> Profile:
    return Profile(
        id="p", name="p", system="test", order=order,
        points={name: ModbusPoint(**spec) for name, spec in points.items()}, **fields,
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
    assert values[2] is None and failed == {2: Quality.DECODE_ERROR}
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


# --- bits, strings and BCD in requests ----------------------------------------------


def test_bits_of_one_register_share_it_with_the_word_they_come_from():
    plan = compile_plan(device(), profile({
        "running": {"address": 10, "bit": 0},
        "fault": {"address": 10, "bit": 1},
        "remote": {"address": 10, "bit": 5},
        "status_word": {"address": 10},
        "speed": {"address": 11},
    }))
    assert spans(plan) == [("holding", 10, 2)]
    values: list = [None] * 5
    assert plan.requests[0].decode_into([0b100001, 1500], values) is None
    assert values == [True, False, True, 33, 1500]
    assert plan.describe() == [
        "holding 10-11 (2 registers): running@10.0, fault@10.1, remote@10.5, status_word@10, speed@11"
    ]


def test_strings_and_bcd_decode_in_a_merged_request_in_their_own_orders():
    plan = compile_plan(device(), profile({
        "model": {"address": 0, "type": "string", "length": 3},
        "serial": {"address": 3, "type": "string", "length": 2, "order": "BADC"},
        "energy": {"address": 5, "type": "bcd32", "scale": 0.1},
        "broken": {"address": 7, "type": "bcd16"},
    }))
    assert spans(plan) == [("holding", 0, 8)]
    values: list = [None] * 4
    problems = plan.requests[0].decode_into(
        [0x4142, 0x2D31, 0x0000, 0x3231, 0x3433, 0x0012, 0x3456, 0x00AB], values
    )
    assert values == ["AB-1", "1234", 12345.6, None]
    assert problems == {3: Quality.DECODE_ERROR}


def test_coils_merge_up_to_2000_bits():
    plan = compile_plan(device(), profile({f"c{i}": {"table": "coil", "address": i} for i in range(2500)}))
    assert spans(plan) == [("coil", 0, 2000), ("coil", 2000, 500)]


def test_a_bit_gap_is_max_gap_registers_worth_of_bits():
    # max_gap 16 registers is 32 bytes of answer: 256 unused bits cost the same
    bridged = compile_plan(device(), profile({
        "a": {"table": "discrete", "address": 0}, "b": {"table": "discrete", "address": 257},
    }))
    assert spans(bridged) == [("discrete", 0, 258)]
    split = compile_plan(device(), profile({
        "a": {"table": "discrete", "address": 0}, "b": {"table": "discrete", "address": 258},
    }))
    assert spans(split) == [("discrete", 0, 1), ("discrete", 258, 1)]
    no_gaps = compile_plan(device(), profile({
        "a": {"table": "coil", "address": 0}, "b": {"table": "coil", "address": 2},
    }, limits=ReadLimits(max_gap=0)))
    assert spans(no_gaps) == [("coil", 0, 1), ("coil", 2, 1)]


def test_every_table_is_read_separately_and_bits_decode_as_bools():
    plan = compile_plan(device(), profile({
        "fire_zone_1": {"table": "discrete", "address": 0},
        "fire_zone_3": {"table": "discrete", "address": 2},
        "pump_relay": {"table": "coil", "address": 0},
        "level": {"table": "input", "address": 0},
        "setpoint": {"address": 0},
    }))
    assert spans(plan) == [("holding", 0, 1), ("input", 0, 1), ("coil", 0, 1), ("discrete", 0, 3)]
    values: list = [None] * 5
    # pymodbus pads a bit answer to whole bytes
    assert plan.requests[3].decode_into([True, False, False, False, False, False, False, False], values) is None
    assert values[:2] == [True, False]
    assert plan.describe()[3] == "discrete 0-2 (3 bits, 1 unused): fire_zone_1@0, fire_zone_3@2"


# --- engineering range -------------------------------------------------------------


def test_a_value_outside_min_and_max_is_reported_out_of_range_without_its_value():
    plan = compile_plan(device(), profile({
        "pressure": {"address": 0, "scale": 0.001, "min": 0, "max": 1.6},
        "temperature": {"address": 1, "type": "int16", "scale": 0.1, "min": -40},
        "level": {"address": 2, "max": 100},
    }))
    values: list = [None] * 3
    problems = plan.requests[0].decode_into([1600, 0xFE6F, 101], values)  # 1.6 MPa, -40.1 °C, 101 %
    assert values == [1.6, None, None]
    assert problems == {1: Quality.OUT_OF_RANGE, 2: Quality.OUT_OF_RANGE}


def test_enum_points_keep_their_integer_code():
    plan = compile_plan(device(), profile({"fault_code": {"address": 4, "enum": {0: "正常", 3: "过流"}}}))
    values: list = [None]
    plan.requests[0].decode_into([3], values)
    assert values == [3]


# --- limits -----------------------------------------------------------------------


def test_the_profiles_limits_cap_a_request():
    points = {f"p{i}": {"address": i} for i in range(25)}
    plan = compile_plan(device(), profile(points, limits=ReadLimits(max_registers=10)))
    assert spans(plan) == [("holding", 0, 10), ("holding", 10, 10), ("holding", 20, 5)]


def test_a_devices_limits_replace_the_profiles():
    points = {"a": {"address": 0}, "b": {"address": 5}}
    quirky = device(limits=ReadLimits(max_gap=0))
    assert spans(compile_plan(quirky, profile(points, limits=ReadLimits(max_gap=10)))) == [
        ("holding", 0, 1), ("holding", 5, 1),
    ]


def test_a_merged_read_is_split_around_an_avoided_range():
    limits = ReadLimits(avoid=[{"table": "holding", "start": 5, "end": 6}])
    points = {"a": {"address": 0, "type": "uint32"}, "b": {"address": 4}, "c": {"address": 7}, "d": {"address": 9}}
    plan = compile_plan(device(), profile(points, limits=limits))
    assert spans(plan) == [("holding", 0, 5), ("holding", 7, 3)]
    same_in_input = {name: {**spec, "table": "input"} for name, spec in points.items()}
    assert spans(compile_plan(device(), profile(same_in_input, limits=limits))) == [("input", 0, 10)]


def test_an_avoided_range_between_bits_splits_them_too():
    limits = ReadLimits(avoid=[{"table": "coil", "start": 3, "end": 3}])
    plan = compile_plan(device(), profile({
        "a": {"table": "coil", "address": 0}, "b": {"table": "coil", "address": 5},
    }, limits=limits))
    assert spans(plan) == [("coil", 0, 1), ("coil", 5, 1)]


def test_a_point_in_an_avoided_range_is_a_config_error():
    limits = ReadLimits(avoid=[{"table": "holding", "start": 100, "end": 109}])
    with pytest.raises(ValueError, match=r"point energy \(holding 98-101\) lies in the avoided range holding 100-109"):
        compile_plan(device(), profile({"energy": {"address": 98, "type": "uint64"}}, limits=limits))


def test_one_request_per_point_still_reads_bits_of_one_register_once():
    points = {
        "a": {"address": 0}, "b": {"address": 1, "type": "uint32"},
        "run": {"address": 3, "bit": 0}, "trip": {"address": 3, "bit": 1},
        "relay": {"table": "coil", "address": 0}, "relay2": {"table": "coil", "address": 1},
    }
    plan = compile_plan(device(), profile(points, limits=ReadLimits(one_request_per_point=True)))
    assert spans(plan) == [
        ("holding", 0, 1), ("holding", 1, 2), ("holding", 3, 1), ("coil", 0, 1), ("coil", 1, 1),
    ]


def test_a_point_wider_than_a_request_is_a_config_error():
    with pytest.raises(ValueError, match="at most 2 per request"):
        compile_plan(device(limits=ReadLimits(max_registers=2)), profile({"e": {"address": 0, "type": "uint64"}}))


# --- byte order ---------------------------------------------------------------------


def test_the_point_order_wins_over_the_device_order_which_wins_over_the_profiles():
    points = {"device_order": {"address": 0, "type": "uint32"}, "own": {"address": 2, "type": "uint32", "order": "ABCD"}}
    plan = compile_plan(device(order="CDAB"), profile(points, order="DCBA"))
    values: list = [None, None]
    plan.requests[0].decode_into([0x5678, 0x1234, 0x1234, 0x5678], values)
    assert values == [0x12345678, 0x12345678]
    assert plan.refs["device_order"].codec.order == "CDAB"
    from_profile = compile_plan(device(), profile(points, order="DCBA"))
    assert from_profile.refs["device_order"].codec.order == "DCBA"


# --- poll groups --------------------------------------------------------------------


METER = {
    "power": {"table": "input", "address": 0, "type": "float32"},
    "current": {"table": "input", "address": 2, "type": "float32"},
    "energy": {"table": "input", "address": 4, "type": "float32", "poll_group": "slow"},
    "serial": {"address": 100, "type": "string", "length": 4, "poll_group": "daily"},
}


def test_each_poll_group_is_its_own_plan_with_its_own_interval_and_batch():
    plans = compile_plans(device(poll_interval="5s", poll_groups={"slow": "60s", "daily": "1d"}), profile(METER))
    assert list(plans) == ["default", "slow", "daily"]
    assert [(p.group, p.interval, p.points) for p in plans.values()] == [
        ("default", 5.0, ("power", "current")),
        ("slow", 60.0, ("energy",)),
        ("daily", 86400.0, ("serial",)),
    ]
    assert spans(plans["default"]) == [("input", 0, 4)]
    assert spans(plans["slow"]) == [("input", 4, 2)]
    assert plans["slow"].refs["energy"].index == 0
    assert "current" not in plans["slow"].refs


def test_a_group_without_points_gets_no_plan():
    plans = compile_plans(device(poll_groups={"slow": "60s", "unused": "10m"}), profile(METER | {
        "serial": {**METER["serial"], "poll_group": "slow"},
    }))
    assert list(plans) == ["default", "slow"]


def test_a_point_in_a_poll_group_the_device_does_not_define_is_a_config_error():
    with pytest.raises(ValueError, match="poll_group: daily, but device dev does not define it "
                       r"\(its poll_groups: slow\)"):
        compile_plans(device(poll_groups={"slow": "60s"}), profile(METER))
    with pytest.raises(ValueError, match=r"its poll_groups: none"):
        compile_plan(device(), profile(METER))


def test_the_default_group_cannot_be_redefined():
    with pytest.raises(ValueError, match="poll_interval"):
        compile_plans(device(poll_groups={"default": "1s"}), profile({"a": {"address": 0}}))


def test_compile_plan_keeps_every_point_in_one_plan_whatever_its_group():
    plan = compile_plan(device(poll_groups={"slow": "60s", "daily": "1d"}), profile(METER))
    assert plan.points == tuple(METER)
    assert spans(plan) == [("holding", 100, 4), ("input", 0, 6)]


def test_describe_plans_heads_each_group_with_its_interval():
    plans = compile_plans(device(poll_groups={"slow": "60s", "daily": "1d"}), profile(METER))
    assert describe_plans(plans) == [
        "default every 5s: 2 points in 1 request",
        "  input 0-3 (4 registers): power@0, current@2",
        "slow every 60s: 1 point in 1 request",
        "  input 4-5 (2 registers): energy@4",
        "daily every 86400s: 1 point in 1 request",
        "  holding 100-103 (4 registers): serial@100",
    ]
