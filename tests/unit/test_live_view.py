"""The live view merges a device's poll batches and COV batches into one current state."""

from __future__ import annotations

from gateway.batch import Batch, Quality
from gateway.catalog import Catalog, DeviceInfo
from gateway.live import render
from gateway.pipeline import Pipeline


class NullOutbox:
    def append_batch(self, batch) -> None:
        pass

    def append_event(self, event) -> None:
        pass


def test_a_cov_batch_of_one_point_does_not_hide_the_rest_of_the_device():
    pipeline = Pipeline(NullOutbox())
    pipeline.emit_batch(Batch("ahu", 100.0, ("supply_temp", "fan"), [16.0, True]))
    pipeline.emit_batch(Batch("ahu", 101.0, ("supply_temp",), [16.5]))
    state = pipeline.current()["ahu"]
    assert state["supply_temp"] == (16.5, Quality.GOOD, 101.0)
    assert state["fan"] == (True, Quality.GOOD, 100.0)


def test_the_live_table_shows_units_chinese_names_enum_texts_and_failures():
    pipeline = Pipeline(NullOutbox())
    pipeline.emit_batch(Batch("pump", 100.0, ("pressure", "fault"), [0.452, 11]))
    pipeline.emit_batch(Batch.failed("meter", 100.0, ("kwh",), Quality.COMM_FAILURE))
    catalog = Catalog("s", "阳光花园", {
        "pump": DeviceInfo("pump", None, "p", "water_supply", {}, {"pressure": "MPa"},
                           {"pressure": "出水压力"}, {"fault": {11: "电机过载"}}),
    })
    text = render(pipeline, catalog, now=102.0)
    assert "出水压力" in text and "0.452 MPa" in text
    assert "11 电机过载" in text
    assert "comm_failure" in text and "2s" in text
