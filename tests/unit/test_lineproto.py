"""Line protocol encoding: escaping, value types, quality, units, timestamps."""

from __future__ import annotations

import pytest

from gateway.batch import Batch, Event, Kind, Quality, Record
from gateway.catalog import Catalog, DeviceInfo
from gateway.sinks.lineproto import LineEncoder, escape_key, escape_measurement, escape_string

TS = 1_700_000_000.123  # → 1700000000123 ms


def _catalog(**tags: str) -> Catalog:
    base = {"site": "s1", "device": "pump1"}
    base.update(tags)
    info = DeviceInfo("pump1", "1号泵", "pump", "water_supply", base, units={"p_out": "MPa"})
    return Catalog("s1", "Site one", {"pump1": info})


def _lines(encoder: LineEncoder, batch: Batch) -> list[str]:
    out: list[str] = []
    encoder.encode_batch(batch, out)
    return out


def test_escaping_rules() -> None:
    assert escape_measurement("my meas,x=1") == r"my\ meas\,x=1"
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key("line\nbreak") == r"line\nbreak"
    assert escape_string('say "hi" \\o/') == r"say \"hi\" \\o/"


def test_tags_sorted_escaped_and_unit_as_tag() -> None:
    catalog = _catalog(
        building="Tower A", floor="B1", room="pump room, east", system="water_supply"
    )
    encoder = LineEncoder(catalog)
    lines = _lines(encoder, Batch("pump1", TS, ("p_out",), [0.42]))
    assert lines == [
        r"readings,building=Tower\ A,device=pump1,floor=B1,point=p_out,"
        r"room=pump\ room\,\ east,site=s1,system=water_supply,unit=MPa value=0.42 1700000000123"
    ]


def test_equals_in_tag_value_and_measurement_name() -> None:
    encoder = LineEncoder(_catalog(room="a=b"), measurement="my readings")
    (line,) = _lines(encoder, Batch("pump1", TS, ("p_out",), [1.5]))
    assert line.startswith(r"my\ readings,device=pump1,point=p_out,room=a\=b,site=s1,unit=MPa ")


def test_chinese_tags_are_written_verbatim() -> None:
    encoder = LineEncoder(_catalog(building="1号楼", room="水泵房"))
    (line,) = _lines(encoder, Batch("pump1", TS, ("p_out",), [1.0]))
    assert "building=1号楼" in line and "room=水泵房" in line


def test_value_types() -> None:
    encoder = LineEncoder(_catalog())
    batch = Batch("pump1", TS, ("f", "i", "on", "off", "s"), [1.25, 7, True, False, 'run "auto"'])
    lines = _lines(encoder, batch)
    fields = [line.split(" ")[1] for line in lines]
    # numbers and bools are all float fields: no `i` suffix, bools as 1.0/0.0
    assert fields == ["value=1.25", "value=7", "value=1.0", "value=0.0", r'text="run']
    assert lines[4].endswith(r'text="run \"auto\"" 1700000000123')


def test_large_and_small_floats_stay_parseable() -> None:
    encoder = LineEncoder(_catalog())
    lines = _lines(encoder, Batch("pump1", TS, ("a", "b"), [1e20, -2.5e-7]))
    assert [line.split(" ")[1] for line in lines] == ["value=1e+20", "value=-2.5e-07"]


def test_non_good_quality_has_no_value() -> None:
    encoder = LineEncoder(_catalog())
    batch = Batch.failed("pump1", TS, ("p_out", "flow"), Quality.COMM_FAILURE)
    lines = _lines(encoder, batch)
    assert lines == [
        'readings,device=pump1,point=p_out,site=s1,unit=MPa quality="comm_failure" 1700000000123',
        'readings,device=pump1,point=flow,site=s1 quality="comm_failure" 1700000000123',
    ]


def test_mixed_quality_and_non_finite() -> None:
    encoder = LineEncoder(_catalog())
    batch = Batch(
        "pump1", TS, ("a", "b", "c"), [1.0, None, float("nan")], ["good", "decode_error", "good"]
    )
    fields = [line.split(" ")[1] for line in _lines(encoder, batch)]
    assert fields == ["value=1.0", 'quality="decode_error"', 'quality="out_of_range"']


def test_unit_as_field() -> None:
    encoder = LineEncoder(_catalog(), unit_as="field")
    lines = _lines(encoder, Batch("pump1", TS, ("p_out", "flow"), [0.5, 3]))
    assert lines == [
        'readings,device=pump1,point=p_out,site=s1 value=0.5,unit="MPa" 1700000000123',
        "readings,device=pump1,point=flow,site=s1 value=3 1700000000123",
    ]


def test_unit_as_must_be_tag_or_field() -> None:
    with pytest.raises(ValueError):
        LineEncoder(_catalog(), unit_as="label")


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0.0, 0),
        (1_700_000_000.0, 1_700_000_000_000),
        (1_700_000_000.0005, 1_700_000_000_000),
        (1_700_000_000.9996, 1_700_000_001_000),
    ],
)
def test_timestamp_in_milliseconds(ts: float, expected: int) -> None:
    (line,) = _lines(LineEncoder(_catalog()), Batch("pump1", ts, ("x",), [1.0]))
    assert line.rsplit(" ", 1)[1] == str(expected)


def test_unknown_device_gets_site_tags_only() -> None:
    (line,) = _lines(LineEncoder(_catalog()), Batch("ghost", TS, ("x",), [2.0]))
    assert line == "readings,device=ghost,point=x,site=s1 value=2.0 1700000000123"


def test_encode_skips_events_and_origin_finds_the_point() -> None:
    encoder = LineEncoder(_catalog())
    records = [
        Record(1, "a", Kind.READING, Batch("pump1", TS, ("p_out", "p_o"), [1.0, 2.0])),
        Record(2, "b", Kind.EVENT, Event("device_status", TS, "pump1", {"online": False})),
    ]
    lines = encoder.encode(records)
    assert len(lines) == 2
    assert encoder.origin(lines[0]) == ("pump1", "p_out")
    assert encoder.origin(lines[1]) == ("pump1", "p_o")
    assert encoder.origin("other,x=1 value=1 1") is None


def test_prefix_cache_is_reused() -> None:
    encoder = LineEncoder(_catalog())
    first = _lines(encoder, Batch("pump1", TS, ("x",), [1.0]))
    second = _lines(encoder, Batch("pump1", TS + 1, ("x",), [1.0]))
    assert first[0].split(" ")[0] is not None
    assert first[0].rsplit(" ", 1)[0] == second[0].rsplit(" ", 1)[0]
    assert list(encoder._cache) == ["pump1"]


@pytest.mark.parametrize("unit_as", ["tag", "field"])
def test_a_poll_of_plain_numbers_is_written_as_the_point_by_point_path_writes_it(unit_as) -> None:
    encoder = LineEncoder(_catalog(building="Tower A"), unit_as=unit_as)
    points = ("p_out", "flow", "count", "tiny", "huge", "on", "off")
    values = [0.42, 12.5, 7, 1e-12, 2.5e300, True, False]
    common = _lines(encoder, Batch("pump1", TS, points, values))  # quality None: the fast path
    careful = _lines(encoder, Batch("pump1", TS, points, values, [Quality.GOOD] * 7))
    assert common == careful
    unit = ',unit="MPa"' if unit_as == "field" else ""
    assert common[0].endswith(f"value=0.42{unit} 1700000000123")
    assert common[2].rsplit(" ", 2)[1] == "value=7"
    assert [line.rsplit(" ", 2)[1] for line in common[5:]] == ["value=1.0", "value=0.0"]


def test_a_poll_with_a_value_that_is_not_a_plain_number_takes_the_careful_path() -> None:
    encoder = LineEncoder(_catalog())
    lines = _lines(encoder, Batch("pump1", TS, ("a", "b", "c"), [1.0, float("nan"), True]))
    assert [line.split(" ")[1] for line in lines] == [
        "value=1.0", 'quality="out_of_range"', "value=1.0"
    ]
