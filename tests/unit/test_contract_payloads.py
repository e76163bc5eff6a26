"""Telemetry payloads: a plain poll is said exactly as the point-by-point path says it."""

from __future__ import annotations

import json

import pytest

from gateway.batch import Batch, Quality
from gateway.sinks import contract

IDENTITY = contract.Identity("demo-estate", "ipc-a")
TS = 1_715_000_000.125


@pytest.mark.parametrize("values", [
    [0.42, 7, True, False, 2.5e300],
    [1, 2, 3],
    [],
])
def test_a_plain_poll_gives_the_payload_of_the_careful_path(values) -> None:
    points = tuple(f"p{i}" for i in range(len(values)))
    common = contract.dumps(contract.telemetry(IDENTITY, "ab:1", 1, Batch("d", TS, points, values)))
    careful = contract.dumps(contract.telemetry(
        IDENTITY, "ab:1", 1, Batch("d", TS, points, values, [Quality.GOOD] * len(values))))
    assert common == careful
    assert json.loads(common)["values"] == dict(zip(points, values, strict=True))


def test_a_value_that_is_not_finite_goes_to_quality_not_values() -> None:
    body = contract.telemetry(IDENTITY, "ab:2", 2, Batch("d", TS, ("a", "b", "c"),
                                                         [1.5, float("nan"), "auto"]))
    assert body["values"] == {"a": 1.5, "c": "auto"}
    assert body["quality"] == {"b": "out_of_range"}
    assert body["ts"] == "2024-05-06T12:53:20.125Z"


def test_a_poll_of_numbers_only_with_an_infinity_still_says_it_in_quality() -> None:
    # every value is a float, so only the finiteness check keeps this off the common path
    body = contract.telemetry(IDENTITY, "ab:3", 3, Batch("d", TS, ("a", "b"), [1.5, float("inf")]))
    assert body["values"] == {"a": 1.5}
    assert body["quality"] == {"b": "out_of_range"}


def test_times_of_one_second_and_the_next_are_both_right() -> None:
    # iso_utc keeps the text of the last second: a new second must not reuse it
    assert contract.iso_utc(TS) == "2024-05-06T12:53:20.125Z"
    assert contract.iso_utc(TS + 0.001) == "2024-05-06T12:53:20.126Z"
    assert contract.iso_utc(TS + 1) == "2024-05-06T12:53:21.125Z"
    assert contract.iso_utc(TS + 0.8749) == "2024-05-06T12:53:21.000Z"
