"""A pytest plugin: a skipped test fails the run.

Here a skip almost always means a missing service or tool, and CI must then fail, not
report green with part of the suite unrun. Expected failures (xfail) stay allowed.
"""

from __future__ import annotations

import pytest

MESSAGE = "skipped, which this suite does not allow (a missing service must fail the run)"


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{MESSAGE}: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    _fail_skip(outcome.get_result())
