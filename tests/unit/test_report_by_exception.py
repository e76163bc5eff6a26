"""Report by exception: a changed point and a heartbeat go upstream, an unchanged one does not."""

from __future__ import annotations

from gateway.batch import Batch, Quality
from gateway.config.models import ReportPolicy
from gateway.sinks.report import ReportFilter, changed, policy_lookup

SITE_DEFAULT = ReportPolicy(deadband=0.5, min_interval=10, max_interval=60)


def _filter(per_point: dict[str, ReportPolicy] | None = None) -> ReportFilter:
    return ReportFilter(policy_lookup(SITE_DEFAULT, lambda device: per_point or {}))


def _sent(f: ReportFilter, ts: float, **values: object) -> dict[str, object]:
    batch = f.filter(Batch("pump1", ts, tuple(values), list(values.values())))
    f.commit()
    return {} if batch is None else dict(zip(batch.points, batch.values, strict=True))


def test_first_reading_is_sent_then_only_changes_beyond_the_deadband():
    f = _filter()
    assert _sent(f, 0, p=10.0, run=1) == {"p": 10.0, "run": 1}
    assert _sent(f, 20, p=10.4, run=1) == {}  # within 0.5 of what was sent, run unchanged
    assert _sent(f, 30, p=10.6, run=1) == {"p": 10.6}


def test_deadband_is_measured_from_the_last_value_sent_so_drift_is_reported():
    f = _filter()
    _sent(f, 0, p=10.0)
    assert _sent(f, 20, p=10.3) == {}
    assert _sent(f, 40, p=10.51) == {"p": 10.51}  # 0.3 + 0.21 adds up past the deadband


def test_a_change_within_min_interval_waits():
    f = _filter()
    _sent(f, 0, p=10.0)
    assert _sent(f, 5, p=20.0) == {}  # too soon
    assert _sent(f, 10, p=20.0) == {"p": 20.0}


def test_an_unchanged_point_is_sent_as_a_heartbeat_every_max_interval():
    f = _filter()
    _sent(f, 0, p=10.0)
    assert _sent(f, 59, p=10.0) == {}
    assert _sent(f, 60, p=10.0) == {"p": 10.0}
    assert _sent(f, 100, p=10.0) == {}
    assert _sent(f, 120, p=10.0) == {"p": 10.0}


def test_a_quality_change_is_always_sent_even_within_min_interval():
    f = _filter()
    _sent(f, 0, p=10.0)
    failed = Batch("pump1", 1, ("p",), [None], [Quality.COMM_FAILURE])
    out = f.filter(failed)
    f.commit()
    assert out is not None and out.quality == [Quality.COMM_FAILURE]
    assert f.filter(Batch("pump1", 2, ("p",), [None], [Quality.COMM_FAILURE])) is None
    f.commit()
    assert _sent(f, 3, p=10.0) == {"p": 10.0}  # good again: sent at once


def test_a_point_policy_overrides_the_site_default():
    f = _filter({"p": ReportPolicy(deadband_percent=10, max_interval=3600)})
    _sent(f, 0, p=100.0, q=1.0)
    assert _sent(f, 20, p=109.0, q=1.0) == {}  # 9 % of 100
    assert _sent(f, 40, p=111.0, q=2.0) == {"p": 111.0, "q": 2.0}
    assert _sent(f, 100, p=111.0, q=2.0) == {"q": 2.0}  # q's heartbeat (site default: 60 s)


def test_a_rolled_back_send_decides_the_same_way_when_retried():
    f = _filter()
    _sent(f, 0, p=10.0)
    batch = Batch("pump1", 20, ("p",), [12.0])
    assert f.filter(batch) is batch
    f.rollback()  # the broker never confirmed it
    assert f.filter(batch) is batch  # still due: nothing the filter meant to send is lost
    f.commit()
    assert f.filter(Batch("pump1", 30, ("p",), [12.0])) is None


def test_text_and_booleans_report_any_change():
    policy = ReportPolicy(deadband=5)
    assert changed("auto", "manual", policy)
    assert not changed("auto", "auto", policy)
    assert changed(True, False, policy)
    assert not changed(10, 14, policy)
    assert changed(10, 16, policy)


def test_devices_are_filtered_independently():
    f = _filter()
    a = f.filter(Batch("pump1", 0, ("p",), [1.0]))
    b = f.filter(Batch("pump2", 0, ("p",), [1.0]))
    assert a is not None and b is not None
