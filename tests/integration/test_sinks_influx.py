"""The InfluxDB sink against real servers: v2 writes to VictoriaMetrics, v1 to InfluxDB 1.6.

VictoriaMetrics stores `readings` field `value` as the metric `readings_value` with
the tags as labels; InfluxDB 1.6 is read back with InfluxQL.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import services
from structlog.testing import capture_logs

from gateway.batch import Batch, Event, Kind, Record
from gateway.catalog import Catalog, DeviceInfo
from gateway.config.models import InfluxSinkConfig
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.influx import InfluxSink

TS = 1_715_000_000.0  # 2024-05-06T12:53:20Z; a fixed past time keeps read-backs exact


def _catalog(site: str) -> Catalog:
    pump = DeviceInfo(
        "pump1",
        "1号生活水泵",
        "pump",
        "water_supply",
        {
            "site": site,
            "building": "1号楼",
            "floor": "B1",
            "room": "水泵房 东",
            "system": "water_supply",
            "device": "pump1",
        },
        units={"p_out": "MPa", "flow": "m3/h"},
    )
    return Catalog(site, "测试小区", {"pump1": pump})


def _readings(n: int = 3, ts: float = TS) -> list[Record]:
    return [
        Record(
            i,
            f"r{i}",
            Kind.READING,
            Batch(
                "pump1",
                ts + i,
                ("p_out", "flow", "run"),
                [round(0.4 + i / 100, 2), 10 * i, i % 2 == 1],
            ),
        )
        for i in range(1, n + 1)
    ]


def _recent() -> float:
    """A whole second a little in the past: VictoriaMetrics drops samples older than its retention."""
    return float(int(time.time()) - 120)


# --- v1 (InfluxDB 1.6) -----------------------------------------------------------------


def _v1_sink(influxdb1: Any, db: str, site: str, **overrides: Any) -> InfluxSink:
    config = InfluxSinkConfig(
        type="influxdb", name="influx", url=influxdb1.url, api="v1", database=db, **overrides
    )
    return InfluxSink(config, _catalog(site))


def _v1_rows(influxdb1: Any, db: str, q: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query as dicts (column name → value)."""
    result = services.influx1_query(influxdb1, db, q)
    rows: list[dict[str, Any]] = []
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            rows.extend(
                dict(zip(series["columns"], values, strict=True)) for values in series["values"]
            )
    return rows


@pytest.fixture
def v1_db(influxdb1: Any) -> str:
    db = f"t_{uuid.uuid4().hex[:10]}"
    services.influx1_create_db(influxdb1, db)
    return db


@pytest.mark.parametrize("gzip", [True, False])
async def test_v1_writes_readings_with_tags_units_and_ms_timestamps(
    influxdb1, v1_db, gzip: bool
) -> None:
    sink = _v1_sink(influxdb1, v1_db, "s1", gzip=gzip, batch_size=4)  # 9 lines → 3 chunks
    try:
        events = [
            Record(9, "e9", Kind.EVENT, Event("device_status", TS, "pump1", {"online": True}))
        ]
        await sink.send(_readings(3) + events)
    finally:
        await sink.stop()
    assert (sink.written, sink.rejected) == (9, 0)
    rows = _v1_rows(influxdb1, v1_db, "SELECT * FROM readings WHERE point = 'p_out'")
    assert [r["value"] for r in rows] == [0.41, 0.42, 0.43]
    assert rows[0]["time"] == "2024-05-06T12:53:21Z"
    assert (
        rows[0]["unit"] == "MPa"
        and rows[0]["room"] == "水泵房 东"
        and rows[0]["building"] == "1号楼"
    )
    run = _v1_rows(influxdb1, v1_db, "SELECT value FROM readings WHERE point = 'run'")
    assert [r["value"] for r in run] == [1.0, 0.0, 1.0]
    assert _v1_rows(influxdb1, v1_db, "SHOW MEASUREMENTS") == [{"name": "readings"}]  # no events


async def test_v1_refused_lines_are_logged_skipped_and_the_rest_lands(influxdb1, v1_db) -> None:
    # `text` already exists as a float field, so string readings conflict; and a
    # timestamp beyond 2262 cannot be stored at all.
    seed = f"readings,device=other,point=x,site=s2 text=1 {int(TS * 1000) - 1000}"
    services.influx1_write(influxdb1, v1_db, seed, precision="ms")
    records = [
        Record(
            1,
            "r1",
            Kind.READING,
            Batch("pump1", TS, ("p_out", "mode", "flow"), [0.5, "自动", 12.0]),
        ),
        Record(2, "r2", Kind.READING, Batch("pump1", 1e13, ("p_out",), [0.9])),
        Record(3, "r3", Kind.READING, Batch("pump1", TS + 1, ("p_out", "flow"), [0.6, 13.0])),
    ]
    sink = _v1_sink(influxdb1, v1_db, "s2", batch_size=100)
    try:
        with capture_logs() as logs:
            await sink.send(records)
    finally:
        await sink.stop()
    assert (sink.written, sink.rejected) == (4, 2)
    refused = [e for e in logs if e["event"] == "influxdb refused a line; skipped"]
    assert [(e["device"], e["point"]) for e in refused] == [("pump1", "mode"), ("pump1", "p_out")]
    assert refused[0]["sink"] == "influx" and "text=" in refused[0]["line"]
    assert "conflict" in refused[0]["error"] and "range" in refused[1]["error"]
    rows = _v1_rows(influxdb1, v1_db, "SELECT value FROM readings WHERE site = 's2' GROUP BY point")
    assert sorted(r["value"] for r in rows) == [0.5, 0.6, 12.0, 13.0]


async def test_a_batch_refused_line_by_line_is_kept_not_dropped(influxdb1, v1_db) -> None:
    # Every line refused is a wrong target more often than bad data: nothing is skipped.
    seed = f"readings,device=other,point=x,site=s5 text=1 {int(TS * 1000) - 1000}"
    services.influx1_write(influxdb1, v1_db, seed, precision="ms")
    records = [
        Record(i, f"r{i}", Kind.READING, Batch("pump1", TS + i, ("mode",), ["自动"]))
        for i in range(1, 4)
    ]
    sink = _v1_sink(influxdb1, v1_db, "s5", batch_size=100)
    try:
        with pytest.raises(SinkUnavailable, match="refused all 3 lines"):
            await sink.send(records)
    finally:
        await sink.stop()
    assert (sink.written, sink.rejected) == (0, 0)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.5), ("-3", 0.5), ("86400", 300.0), ("inf", None), ("nan", None),
     ("soon", None), (None, None)],
)
def test_retry_after_is_honoured_within_sane_bounds(header, seconds) -> None:
    from gateway.sinks.influx import parse_retry_after

    assert parse_retry_after(header) == seconds


async def test_v1_server_down_raises_then_the_same_records_land(influxdb1, v1_db) -> None:
    sink = _v1_sink(influxdb1, v1_db, "s3", timeout=2.0)
    records = _readings(2)
    try:
        influxdb1.stop()
        try:
            with pytest.raises(SinkUnavailable):
                await sink.send(records)
        finally:
            influxdb1.start()
        await sink.send(records)  # what the runner does after SinkUnavailable
    finally:
        await sink.stop()
    rows = _v1_rows(influxdb1, v1_db, "SELECT value FROM readings WHERE point = 'flow'")
    assert [r["value"] for r in rows] == [10.0, 20.0]


async def test_v1_missing_database_holds_data_and_logs_once(influxdb1) -> None:
    sink = _v1_sink(influxdb1, f"missing_{uuid.uuid4().hex[:8]}", "s4")
    try:
        with capture_logs() as logs:
            for _ in range(2):
                with pytest.raises(SinkUnavailable, match="404"):
                    await sink.send(_readings(1))
    finally:
        await sink.stop()
    assert sink.written == 0 and sink.rejected == 0
    assert [e["status"] for e in logs if e["log_level"] == "error"] == [404]


# --- v2 (VictoriaMetrics speaks the InfluxDB v2 write API) -------------------------------


def _v2_sink(victoria: Any, site: str, **overrides: Any) -> InfluxSink:
    config = InfluxSinkConfig(
        type="influxdb",
        name="influx",
        url=victoria.url,
        api="v2",
        bucket="site",
        org="pm",
        **overrides,
    )
    return InfluxSink(config, _catalog(site))


def _v2_series(
    victoria: Any, match: str, expected: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Exported series for `match`, waiting until `expected` samples are searchable."""
    deadline = time.monotonic() + timeout
    while True:
        series = services.victoria_export(victoria, match)
        if sum(len(s["values"]) for s in series) >= expected or time.monotonic() > deadline:
            return series
        time.sleep(0.2)


@pytest.mark.parametrize("gzip", [True, False])
async def test_v2_writes_land_in_victoria(victoria, gzip: bool) -> None:
    site = f"v{uuid.uuid4().hex[:8]}"
    sink = _v2_sink(victoria, site, gzip=gzip, batch_size=2)
    await sink.start()
    ts = _recent()
    try:
        await sink.send(_readings(3, ts))
    finally:
        await sink.stop()
    assert (sink.written, sink.rejected) == (9, 0)
    series = _v2_series(victoria, f'{{__name__="readings_value",site="{site}"}}', 9)
    by_point = {s["metric"]["point"]: s for s in series}
    assert set(by_point) == {"p_out", "flow", "run"}
    p_out = by_point["p_out"]
    assert p_out["values"] == [0.41, 0.42, 0.43]
    first_ms = int(ts * 1000)
    assert p_out["timestamps"] == [first_ms + 1000, first_ms + 2000, first_ms + 3000]
    labels = p_out["metric"]
    assert (
        labels["unit"] == "MPa" and labels["building"] == "1号楼" and labels["room"] == "水泵房 东"
    )
    assert labels["device"] == "pump1" and labels["system"] == "water_supply"
    assert by_point["run"]["values"] == [1, 0, 1]


async def test_v2_server_down_raises_then_the_same_records_land(victoria) -> None:
    site = f"v{uuid.uuid4().hex[:8]}"
    sink = _v2_sink(victoria, site, timeout=2.0)
    await sink.start()
    records = _readings(2, _recent())
    try:
        victoria.stop()
        try:
            with pytest.raises(SinkUnavailable):
                await sink.send(records)
        finally:
            victoria.start()
        await sink.send(records)
    finally:
        await sink.stop()
    series = _v2_series(victoria, f'{{__name__="readings_value",site="{site}",point="flow"}}', 2)
    assert [v for s in series for v in s["values"]] == [10, 20]


# --- answers real servers give only under load or misconfiguration ----------------------


class _Scripted:
    """A loopback HTTP server answering writes with scripted statuses (throttling, outages)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], str]] = []
        self.bodies: list[bytes] = []
        self.url = ""
        self._runner: Any = None

    async def __aenter__(self) -> _Scripted:
        from aiohttp import web

        async def write(request: web.Request) -> web.Response:
            self.bodies.append(await request.read())
            status, headers, body = self.answers.pop(0) if self.answers else (204, {}, "")
            return web.Response(status=status, headers=headers, text=body or None)

        app = web.Application()
        app.router.add_post("/write", write)
        app.router.add_post("/api/v2/write", write)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_throttling_and_auth_answers_map_to_sink_unavailable(api: str) -> None:
    async with _Scripted() as server:
        config = InfluxSinkConfig(
            type="influxdb",
            name="influx",
            url=server.url,
            api=api,
            bucket="b",
            database="d",
            gzip=False,
        )
        sink = InfluxSink(config, _catalog("s5"))
        await sink.start()
        try:
            server.answers = [
                (429, {"Retry-After": "7"}, '{"message": "slow down"}'),
                (503, {"Retry-After": "3"}, ""),
                (500, {}, '{"error": "engine: boom"}'),
                (401, {}, '{"message": "unauthorized access"}'),
            ]
            with pytest.raises(SinkUnavailable) as throttled:
                await sink.send(_readings(1))
            assert throttled.value.retry_after == 7.0 and "slow down" in str(throttled.value)
            with pytest.raises(SinkUnavailable) as unavailable:
                await sink.send(_readings(1))
            assert unavailable.value.retry_after == 3.0
            with pytest.raises(SinkUnavailable, match="boom"):
                await sink.send(_readings(1))
            with pytest.raises(SinkUnavailable, match="401.*credentials"):
                await sink.send(_readings(1))
            await sink.send(_readings(1))  # 204 at last
        finally:
            await sink.stop()
    assert (sink.written, sink.rejected) == (3, 0)
    assert len(server.bodies) == 5
    assert all(b.endswith(b" 1715000001000") for b in server.bodies)
