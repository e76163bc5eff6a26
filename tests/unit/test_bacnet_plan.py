"""BACnet read plans, request packing by APDU size, value conversion and quality."""

from __future__ import annotations

import pytest
from bacpypes3.basetypes import BinaryPV, ErrorType, Reliability, StatusFlags
from bacpypes3.primitivedata import CharacterString, Enumerated, Real, Unsigned

from drivers.bacnet.plan import answer_size, compile_plans, pack, rpm_parameters
from drivers.bacnet.values import (
    engineering_value,
    python_value,
    same_value,
    status_quality,
    value_to_write,
)
from gateway.batch import Quality
from gateway.config.models import BacnetConnection, BacnetPoint, Device, Profile


def make(points: dict[str, dict], **device: object) -> tuple[Device, Profile]:
    profile = Profile(
        id="ahu", name="AHU", system="hvac", protocol="bacnet",
        points={name: BacnetPoint(**spec) for name, spec in points.items()},
    )
    dev = Device(
        id="ahu_1", profile="ahu",
        connection=BacnetConnection(type="bacnet_ip", address="127.0.0.1:47809", device_instance=1),
        **device,
    )
    return dev, profile


def test_each_object_reads_status_flags_and_reliability_once_beside_its_values() -> None:
    dev, profile = make({
        "supply": {"object": "analog-input,1"},
        "fan": {"object": "binary-output,1"},
        "supply_x10": {"object": "analog-input,1", "scale": 10},
        "units": {"object": "analog-input,1", "property": "units"},
    })
    plan = compile_plans(dev, profile)["default"]
    assert [read.key for read in plan.reads] == [
        ("analog-input,1", "present-value", None),
        ("analog-input,1", "status-flags", None),
        ("analog-input,1", "reliability", None),
        ("analog-input,1", "units", None),
        ("binary-output,1", "present-value", None),
        ("binary-output,1", "status-flags", None),
        ("binary-output,1", "reliability", None),
    ]
    assert plan.points == ("supply", "fan", "supply_x10", "units")
    units = plan.point_reads[3]
    assert units.status is None  # only present-value is judged by the flags


def test_poll_groups_get_their_own_plans_and_an_unknown_group_is_an_error() -> None:
    dev, profile = make(
        {"a": {"object": "analog-input,1"}, "b": {"object": "analog-input,2", "poll_group": "slow"}},
        poll_groups={"slow": 60},
    )
    plans = compile_plans(dev, profile)
    assert {name: plan.interval for name, plan in plans.items()} == {"default": 5.0, "slow": 60.0}
    dev, profile = make({"b": {"object": "analog-input,2", "poll_group": "slower"}})
    with pytest.raises(ValueError, match="poll_group 'slower'"):
        compile_plans(dev, profile)


def test_reads_are_packed_into_requests_whose_answers_fit_the_apdu() -> None:
    dev, profile = make({f"t{n}": {"object": f"analog-input,{n}"} for n in range(1, 41)})
    reads = compile_plans(dev, profile)["default"].reads
    for budget in (128, 206, 480, 1476):
        requests = pack(reads, budget)
        assert [read for request in requests for read in request] == list(reads)  # order kept
        assert all(answer_size(request) <= budget for request in requests)
        if budget < answer_size(reads):
            assert len(requests) > 1
    assert len(pack(reads, answer_size(reads))) == 1
    assert len(pack(reads, 128)) > len(pack(reads, 480))


def test_a_read_bigger_than_the_budget_still_gets_a_request_of_its_own() -> None:
    dev, profile = make({"texts": {"object": "multi-state-input,1", "property": "state-text"},
                         "pv": {"object": "analog-input,1"}})
    reads = compile_plans(dev, profile)["default"].reads
    requests = pack(reads, 50)
    assert requests[0] == (reads[0],)
    assert sum(len(request) for request in requests) == len(reads)


def test_rpm_parameters_name_each_object_once_per_run() -> None:
    dev, profile = make({"a": {"object": "analog-input,1"}, "b": {"object": "analog-input,2"}})
    parameters = rpm_parameters(compile_plans(dev, profile)["default"].reads)
    assert [str(p) for p in parameters[0::2]] == ["analog-input,1", "analog-input,2"]
    assert [len(refs) for refs in parameters[1::2]] == [3, 3]


def test_bacnet_values_become_plain_python() -> None:
    assert python_value(Real(21.5)) == 21.5 and type(python_value(Real(21.5))) is float
    assert python_value(BinaryPV("active")) is True
    assert python_value(BinaryPV("inactive")) is False
    assert python_value(Unsigned(3)) == 3 and type(python_value(Unsigned(3))) is int
    assert python_value(Enumerated(2)) == 2
    assert python_value(CharacterString("AHU-1")) == "AHU-1"


def test_status_flags_and_reliability_decide_whether_a_value_is_trusted() -> None:
    assert status_quality(StatusFlags([0, 0, 0, 0]), Reliability("no-fault-detected")) is None
    assert status_quality(StatusFlags([1, 0, 1, 0]), None) is None  # in alarm, overridden: still live
    assert status_quality(StatusFlags([0, 1, 0, 0]), None) == Quality.DEVICE_EXCEPTION  # fault
    assert status_quality(StatusFlags([0, 0, 0, 1]), None) == Quality.DEVICE_EXCEPTION  # out of service
    assert status_quality(StatusFlags([0, 0, 0, 0]), Reliability("open-loop")) == Quality.DEVICE_EXCEPTION
    no_reliability = ErrorType(errorClass="property", errorCode="unknown-property")
    assert status_quality(StatusFlags([0, 0, 0, 0]), no_reliability) is None
    assert status_quality(None, None) is None


def test_scale_offset_and_range_like_modbus_but_enum_points_keep_their_state() -> None:
    scaled = BacnetPoint(object="analog-input,1", scale=0.1, offset=-5, min=0, max=50)
    assert engineering_value(scaled, Real(300.0)) == (pytest.approx(25.0), None)
    assert engineering_value(scaled, Real(600.0)) == (None, Quality.OUT_OF_RANGE)
    mode = BacnetPoint(object="multi-state-input,1", scale=10, enum={1: "off", 2: "auto"})
    assert engineering_value(mode, Unsigned(2)) == (2, None)
    fan = BacnetPoint(object="binary-input,1", scale=10)
    assert engineering_value(fan, BinaryPV("active")) == (True, None)
    assert engineering_value(BacnetPoint(object="analog-input,1"), Real(float("nan"))) == (None, Quality.DECODE_ERROR)


def test_values_to_write_are_unscaled_and_range_checked() -> None:
    valve = BacnetPoint(object="analog-output,1", writable=True, min=0, max=100, scale=0.5)
    assert value_to_write(valve, "analog-output", 40) == 80.0
    with pytest.raises(ValueError, match=r"outside the point's range \[0, 100\]"):
        value_to_write(valve, "analog-output", 120)
    with pytest.raises(ValueError, match="a number"):
        value_to_write(valve, "analog-output", "open")
    fan = BacnetPoint(object="binary-output,1", writable=True)
    assert value_to_write(fan, "binary-output", True) == "active"
    assert value_to_write(fan, "binary-output", 0) == "inactive"
    with pytest.raises(ValueError, match="active/inactive"):
        value_to_write(fan, "binary-output", 2)
    mode = BacnetPoint(object="multi-state-value,1", writable=True, enum={1: "off", 2: "auto"})
    assert value_to_write(mode, "multi-state-value", 2) == 2
    with pytest.raises(ValueError, match="not one of the point's states"):
        value_to_write(mode, "multi-state-value", 3)


def test_read_back_compares_real_values_loosely() -> None:
    assert same_value(21.3, Real(21.3))  # REAL is 32-bit: 21.299999237...
    assert not same_value(21.3, Real(21.4))
    assert same_value("active", BinaryPV("active"))
    assert same_value(2, Unsigned(2))
