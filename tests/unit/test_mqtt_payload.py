"""MQTT payload decoding: JSON paths, plain payloads, value maps, types, timestamps, masking."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from drivers.mqtt.limits import LogGate, TokenBucket
from drivers.mqtt.payload import (
    BAD_JSON,
    BAD_TIMESTAMP,
    MISSING_PATH,
    UNMAPPED,
    WRONG_TYPE,
    Message,
    OutOfRange,
    PayloadError,
    Timestamp,
    compile_point,
    mask,
    parse_timestamp,
)
from gateway.config.models import MqttPoint


def decode(payload: Any, **point: Any) -> Any:
    raw = payload if isinstance(payload, bytes) else (
        payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    )
    return compile_point("p", MqttPoint(**point)).decode(Message(raw))


def reason_of(payload: Any, **point: Any) -> str:
    with pytest.raises(PayloadError) as caught:
        decode(payload, **point)
    return caught.value.reason


# --- where the value is --------------------------------------------------------------


def test_a_json_path_reads_nested_objects_and_lists() -> None:
    body = {"door": {"state": "open"}, "readings": [{"value": 21.5}, {"value": 3}]}

    assert decode(body, path="$.door.state", type="text") == "open"
    assert decode(body, path="$.readings[0].value") == 21.5
    assert decode(body, path="$.readings[1].value", type="integer") == 3


def test_a_point_without_a_path_is_the_whole_payload() -> None:
    assert decode("21.5\n") == 21.5
    assert decode("closed", type="text") == "closed"
    assert decode("1", type="bool") is True


def test_the_payload_is_parsed_once_however_many_points_read_it() -> None:
    message = Message(b'{"a": 1, "b": 2}')
    first = compile_point("a", MqttPoint(path="$.a"))
    second = compile_point("b", MqttPoint(path="$.b"))

    assert (first.decode(message), second.decode(message)) == (1.0, 2.0)
    assert message.document() is message.document()


# --- types ---------------------------------------------------------------------------


def test_a_number_is_always_a_float_so_a_series_never_changes_type() -> None:
    assert decode({"t": 21}, path="$.t") == 21.0
    assert isinstance(decode({"t": 21}, path="$.t"), float)
    assert decode({"t": "21.5"}, path="$.t") == 21.5  # devices that quote their numbers


def test_an_integer_is_always_an_int_and_refuses_fractions() -> None:
    assert decode({"floor": 12.0}, path="$.floor", type="integer") == 12
    assert decode("7", type="integer") == 7
    assert reason_of({"floor": 12.5}, path="$.floor", type="integer") == WRONG_TYPE


@pytest.mark.parametrize("raw, expected", [
    (True, True), (False, False), (1, True), (0, False),
    ("ON", True), ("off", False), ("yes", True), ("false", False),
])
def test_a_bool_takes_the_spellings_devices_use(raw: Any, expected: bool) -> None:
    assert decode({"b": raw}, path="$.b", type="bool") is expected


def test_text_takes_numbers_and_booleans_as_the_device_wrote_them() -> None:
    assert decode({"c": 1234}, path="$.c", type="text") == "1234"
    assert decode({"c": True}, path="$.c", type="text") == "true"


def test_scale_and_offset_apply_to_numbers_without_binary_noise() -> None:
    assert decode({"p": 3}, path="$.p", scale=0.1) == 0.3
    assert decode({"t": 500}, path="$.t", scale=0.1, offset=-40) == 10.0
    assert decode({"n": 7}, path="$.n", type="integer", scale=10) == 70


def test_min_and_max_make_a_value_out_of_range_not_malformed() -> None:
    with pytest.raises(OutOfRange):
        decode({"t": 120}, path="$.t", max=100)
    assert decode({"t": 100}, path="$.t", max=100) == 100.0


# --- value maps ----------------------------------------------------------------------


def test_a_value_map_turns_payload_text_into_the_point_value() -> None:
    door = {"path": "$.door", "map": {"open": 1, "closed": 0}}

    assert decode({"door": "open"}, **door) == 1.0
    assert decode({"door": "closed"}, **door) == 0.0
    assert decode("open", map={"open": True, "closed": False}, type="bool") is True


def test_a_value_map_matches_json_numbers_and_booleans_by_their_text() -> None:
    assert decode({"s": 2}, path="$.s", type="text", map={"2": "forced"}) == "forced"
    assert decode({"s": True}, path="$.s", type="integer", map={"true": 1}) == 1


def test_a_value_the_map_does_not_know_is_unmapped() -> None:
    assert reason_of({"door": "ajar"}, path="$.door", map={"open": 1, "closed": 0}) == UNMAPPED


def test_a_map_value_that_is_not_the_point_type_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="map value 'wide' for 'open' is not a number"):
        compile_point("door", MqttPoint(path="$.door", map={"open": "wide"}))


# --- malformed payloads --------------------------------------------------------------


def test_bad_json_is_one_reason_for_every_path_point() -> None:
    message = Message(b'{"door": "open"')
    points = [compile_point(n, MqttPoint(path=f"$.{n}")) for n in ("a", "b")]

    reasons = []
    for point in points:
        with pytest.raises(PayloadError) as caught:
            point.decode(message)
        reasons.append(caught.value.reason)
    assert reasons == [BAD_JSON, BAD_JSON]


def test_a_missing_path_and_a_wrong_type_are_told_apart() -> None:
    assert reason_of({"door": {}}, path="$.door.state", type="text") == MISSING_PATH
    assert reason_of({"t": "warm"}, path="$.t") == WRONG_TYPE
    assert reason_of({"t": {"v": 1}}, path="$.t", type="text") == WRONG_TYPE
    assert reason_of({"t": None}, path="$.t") == WRONG_TYPE
    assert reason_of(b"\xff\xfe", type="text") == WRONG_TYPE
    assert reason_of("NaN") == WRONG_TYPE


def test_a_json_path_that_does_not_parse_is_a_config_error() -> None:
    # `gateway check` reports it at the point's line; the driver never sees it
    with pytest.raises(ValueError, match=r"path '\$\.door\[' is not a JSON path"):
        MqttPoint(path="$.door[")


# --- timestamps ----------------------------------------------------------------------


def test_timestamps_come_as_iso_8601_or_epoch_seconds_or_milliseconds() -> None:
    utc = 1714550400.0  # 2024-05-01T08:00:00Z
    assert parse_timestamp("2024-05-01T08:00:00Z") == utc
    assert parse_timestamp("2024-05-01T16:00:00+08:00") == utc
    assert parse_timestamp(1714550400) == utc
    assert parse_timestamp(1714550400123) == pytest.approx(utc + 0.123)
    assert parse_timestamp("1714550400") == utc


def test_an_iso_time_without_an_offset_is_the_gateway_local_time() -> None:
    expected = datetime(2024, 5, 1, 8, 0, 0).timestamp()
    assert parse_timestamp("2024-05-01T08:00:00") == expected


@pytest.mark.parametrize("raw", ["yesterday", True, -5, {"t": 1}])
def test_a_value_that_is_not_a_time_is_a_bad_timestamp(raw: Any) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_timestamp(raw)
    assert caught.value.reason == BAD_TIMESTAMP


def test_a_payload_without_its_timestamp_leaves_the_arrival_time() -> None:
    stamp = Timestamp("$.ts")

    assert stamp.of(Message(b'{"ts": "2024-05-01T08:00:00Z", "v": 1}')) == 1714550400.0
    assert stamp.of(Message(b'{"v": 1}')) is None
    assert stamp.of(Message(b"42")) is None
    assert Timestamp(None).of(Message(b'{"ts": 1}')) is None


# --- masking -------------------------------------------------------------------------


def test_a_sensitive_value_shows_at_most_its_last_four_characters() -> None:
    card = compile_point("card", MqttPoint(path="$.card", type="text", sensitive=True))

    assert card.decode(Message(b'{"card": "0012345678"}')) == "0012345678"  # never in the batch
    assert card.shown("0012345678") == "****5678"
    assert mask("1234") == "****"


@pytest.mark.parametrize("map_", [None, {"1": 1}])
def test_a_sensitive_value_never_appears_in_an_error(map_: dict[str, int] | None) -> None:
    card = compile_point(
        "card", MqttPoint(path="$.card", type="integer", sensitive=True, map=map_)
    )
    with pytest.raises(PayloadError) as caught:
        card.decode(Message(b'{"card": "A012345678"}'))
    assert "A012345678" not in str(caught.value)
    assert "****5678" in caught.value.detail


# --- limits --------------------------------------------------------------------------


def test_the_token_bucket_admits_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0)
    admitted = [bucket.take(100.0) for _ in range(5)]
    assert admitted == [True, True, False, False, False]
    assert bucket.take(100.5) is True  # half a second earns one message at 2/s
    assert bucket.take(100.5) is False


def test_the_log_gate_opens_once_a_period_and_counts_what_it_held() -> None:
    gate = LogGate(60.0)
    assert gate.open(0.0) == 0
    assert [gate.open(t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert gate.open(60.0) == 3



@pytest.mark.parametrize("raw", [1e23, "1e23", 1e30, "1890-01-01T00:00:00", 0.5])
def test_an_absurd_device_time_is_a_bad_timestamp_not_a_stalled_sink(raw) -> None:
    from drivers.mqtt.payload import PayloadError

    with pytest.raises(PayloadError) as caught:
        parse_timestamp(raw)
    assert caught.value.reason == "bad_timestamp"


def test_deep_nesting_and_huge_integers_are_counted_as_malformed_not_raised() -> None:
    from drivers.mqtt.payload import Message, PayloadError, compile_point

    deep = ("[" * 5000 + "]" * 5000).encode()
    with pytest.raises(PayloadError):
        Message(deep).document()
    decoder = compile_point("kwh", MqttPoint(type="integer", scale=0.5))
    with pytest.raises(PayloadError):
        decoder.decode(Message(("1" + "0" * 400).encode()))
