"""Shared fixtures: real Mosquitto, InfluxDB 1.6 and VictoriaMetrics on free loopback ports.

The services come from scripts/services.py (also importable by tests as ``services``; the
Modbus site simulator is ``simsite``). A missing binary makes the tests that need it fail
with a RuntimeError naming the Debian package; nothing is skipped, and a skip anywhere
(scripts/pytest_no_skips.py, loaded by pyproject.toml's addopts) fails the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import services  # noqa: E402  (needs the sys.path entry above)
from services import Service  # noqa: E402

# Session services that tests may stop() to make them unreachable; any a test leaves
# stopped is started again (same port, same data) after that test.
_SESSION_SERVICES: list[Service] = []

_INTEGRATION_DIRS = ("integration", "faults")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: talks to real services (Mosquitto, InfluxDB, VictoriaMetrics, pymodbus)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/faults is marked ``integration``."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        try:
            rel = Path(str(item.path)).resolve().relative_to(tests_dir)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in _INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


def _session_service(start, tmp_path_factory: pytest.TempPathFactory, name: str):
    svc = start(tmp_path_factory.mktemp(name))
    _SESSION_SERVICES.append(svc)
    try:
        yield svc
    finally:
        _SESSION_SERVICES.remove(svc)
        svc.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Mosquitto 2 on 127.0.0.1:``.port`` (anonymous, no persistence)."""
    yield from _session_service(services.start_mosquitto, tmp_path_factory, "mosquitto")


@pytest.fixture(scope="session")
def influxdb1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """InfluxDB 1.6 at ``.url`` (/write, InfluxQL /query, auth off)."""
    yield from _session_service(services.start_influxdb1, tmp_path_factory, "influxdb1")


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """VictoriaMetrics at ``.url`` (line protocol on /write and /api/v2/write)."""
    yield from _session_service(services.start_victoria, tmp_path_factory, "victoria")


@pytest.fixture(autouse=True)
def _restart_stopped_services() -> Iterator[None]:
    yield
    for svc in list(_SESSION_SERVICES):
        if not svc.is_running():
            svc.start()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return services.free_port()
