"""Addresses as engineers copy them from vendor manuals: Modicon 40001, one-based, zero-based.

The models turn every notation into the protocol (zero-based) address at load time, so the
plan and the wire only ever see one kind; these tests pin that through `Profile.from_data`.
"""

from __future__ import annotations

import pytest

from drivers.modbus.plan import compile_plan
from gateway.config.models import Device, ModbusTcpConnection, Profile


def load(points: dict[str, dict], addressing: str | None = None) -> Profile:
    data = {"id": "p", "name": "p", "system": "test", "points": points}
    if addressing is not None:
        data["addressing"] = addressing
    return Profile.from_data(data)


def where(profile: Profile, name: str = "x") -> tuple[str, int]:
    point = profile.points[name]
    return point.table, point.address


@pytest.mark.parametrize(
    ("reference", "table", "address"),
    [
        (40001, "holding", 0),
        (40010, "holding", 9),
        (49999, "holding", 9998),
        (400001, "holding", 0),  # six digits, for maps past register 9999
        (465536, "holding", 65535),
        (30001, "input", 0),
        (300100, "input", 99),
        (10001, "discrete", 0),
        (1, "coil", 0),  # 00001: YAML reads the leading zeros away
        (9999, "coil", 9998),
    ],
)
def test_a_modicon_reference_names_the_table_and_the_zero_based_address(reference, table, address):
    assert where(load({"x": {"address": reference}}, "modicon")) == (table, address)


def test_a_modicon_coil_or_discrete_reference_defaults_to_bool():
    assert load({"x": {"address": 10001}}, "modicon").points["x"].type == "bool"


def test_a_modicon_reference_may_repeat_its_own_table():
    assert where(load({"x": {"table": "input", "address": 30001}}, "modicon")) == ("input", 0)


def test_a_modicon_reference_contradicting_its_table_is_explained():
    with pytest.raises(ValueError, match="40001 is Modicon notation for holding register 1, but table: input"):
        load({"x": {"table": "input", "address": 40001}}, "modicon")


@pytest.mark.parametrize("reference", [0, 20001, 50001, 40000, 500000])
def test_a_number_that_is_no_modicon_reference_is_refused_with_the_ranges(reference):
    with pytest.raises(ValueError, match="40001-49999 holding registers"):
        load({"x": {"address": reference}}, "modicon")


def test_40001_in_a_zero_based_profile_suggests_addressing_modicon():
    with pytest.raises(ValueError, match="add addressing: modicon") as error:
        load({"x": {"address": 40001}})
    assert "holding register 1, protocol address 0" in str(error.value)
    with pytest.raises(ValueError, match="addressing: modicon"):
        load({"x": {"address": 30005, "type": "float32"}}, "zero_based")


def test_a_table_makes_a_high_address_mean_itself():
    assert where(load({"x": {"table": "holding", "address": 40001}})) == ("holding", 40001)


def test_one_based_addresses_shift_by_one_in_every_table():
    profile = load({
        "x": {"address": 1},
        "coil": {"table": "coil", "address": 1},
        "input": {"table": "input", "address": 100},
    }, "one_based")
    assert where(profile) == ("holding", 0)
    assert where(profile, "coil") == ("coil", 0)
    assert where(profile, "input") == ("input", 99)


def test_one_based_address_0_is_refused():
    with pytest.raises(ValueError, match="start at 1"):
        load({"x": {"address": 0}}, "one_based")


def test_zero_based_addresses_are_sent_as_written():
    assert where(load({"x": {"address": 0}})) == ("holding", 0)


def test_a_modicon_map_plans_the_protocol_addresses():
    profile = load({
        "frequency": {"address": 40001, "scale": 0.01},
        "current": {"address": 40002, "scale": 0.1},
        "voltage": {"address": 30001, "type": "float32"},
        "run": {"address": 10001, "type": "bool"},
        "relay": {"address": 1, "type": "bool", "writable": True},
    }, "modicon")
    device = Device(id="d", profile="p", connection=ModbusTcpConnection(host="127.0.0.1"))
    plan = compile_plan(device, profile)
    assert [(r.table, r.start, r.count) for r in plan.requests] == [
        ("holding", 0, 2), ("input", 0, 2), ("coil", 0, 1), ("discrete", 0, 1),
    ]
    assert plan.refs["relay"].codec.encode(True) == [True]
