"""Devices of one profile share one compiled plan and points read alike share one codec, so
memory and start-up grow with the number of profiles, not of devices."""

from __future__ import annotations

import gc
import weakref

import pytest

from drivers.modbus import plan as plans_module
from drivers.modbus.decode import codec_for
from drivers.modbus.plan import compile_plans, shared_plans
from drivers.registry import DriverSet
from gateway.config.models import Device, ModbusPoint, ModbusTcpConnection, Profile, ReadLimits

METER = {
    "voltage": {"address": 0, "scale": 0.1, "unit": "V"},
    "current": {"address": 1, "scale": 0.01, "unit": "A"},
    "energy": {"address": 10, "type": "uint32", "unit": "kWh"},
    "alarm": {"address": 12, "type": "bool", "bit": 3},
}


def device(device_id: str, port: int = 502, **fields) -> Device:
    return Device(id=device_id, profile="meter",
                  connection=ModbusTcpConnection(host="127.0.0.1", port=port), **fields)


def profile(points: dict[str, dict] = METER) -> Profile:
    return Profile(id="meter", name="meter", system="power",
                   points={name: ModbusPoint(**spec) for name, spec in points.items()})


def shape(plans: dict) -> dict:
    """What a plan reads and decodes, comparable across compilations."""
    return {
        group: (plan.device, plan.points, plan.interval, plan.describe(),
                {name: (r.index, r.table, r.address, r.codec, r.writable) for name, r in plan.refs.items()})
        for group, plan in plans.items()
    }


def test_devices_of_one_profile_share_requests_and_point_places_but_keep_their_names():
    meter = profile()
    first = shared_plans(device("m1"), meter)["default"]
    second = shared_plans(device("m2", port=503), meter)["default"]

    assert (first.device, second.device) == ("m1", "m2")
    assert second.requests is first.requests and second.refs is first.refs
    assert second.points is first.points
    assert shape({"default": second}) == shape(compile_plans(device("m2", port=503), meter))


@pytest.mark.parametrize("different", [
    {"poll_interval": "10s"},
    {"poll_groups": {"slow": "60s"}},
    {"order": "CDAB"},
    {"limits": ReadLimits(max_gap=0)},
])
def test_a_device_polled_differently_gets_a_plan_of_its_own(different):
    meter = profile()
    usual = shared_plans(device("m1"), meter)
    other = shared_plans(device("m2", **different), meter)

    assert other["default"].requests is not usual["default"].requests
    assert shape(other) == shape(compile_plans(device("m2", **different), meter))


def test_a_reloaded_profile_is_compiled_again_and_the_old_plans_go_with_it():
    old = profile()
    before = shared_plans(device("m1"), old)["default"]
    new = profile({**METER, "power": {"address": 2, "scale": 0.1}})  # same id, one more point

    after = shared_plans(device("m1"), new)["default"]

    assert "power" in after.points and "power" not in before.points
    gone = weakref.ref(old)
    del old, before
    gc.collect()
    assert gone() is None  # the cache does not keep a replaced profile alive
    assert all(profile_ref() is not None for profile_ref, _plans in plans_module._SHARED.values())


def test_a_driver_set_hands_its_devices_the_shared_plan_and_one_write_map():
    meter = profile()
    drivers = DriverSet()
    a = drivers.create(device("m1"), meter)
    b = drivers.create(device("m2", port=503), meter)

    assert a.plans["default"].requests is b.plans["default"].requests
    assert a._refs is b._refs and a.points is b.points
    assert a.points == tuple(METER)


def test_points_read_alike_share_one_codec_and_points_read_differently_do_not():
    same = [ModbusPoint(address=i, scale=0.1) for i in range(3)]
    assert len({id(codec_for(p, "ABCD")) for p in same}) == 1
    assert codec_for(same[0], "ABCD").decode([215]) == 21.5

    assert codec_for(ModbusPoint(address=0, min=0, max=10), "ABCD") is not codec_for(
        ModbusPoint(address=0, min=0, max=20), "ABCD")
    assert codec_for(ModbusPoint(address=0), "ABCD") is not codec_for(ModbusPoint(address=0), "DCBA")
    assert codec_for(ModbusPoint(address=0, offset=0.0, scale=-1), "ABCD") is not codec_for(
        ModbusPoint(address=0, offset=-0.0, scale=-1), "ABCD")  # equal, but not the same sum
