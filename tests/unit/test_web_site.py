"""A real `Gateway` with a status page, for the test_web_* files; not tests itself.

The site's one pump polls a port nothing listens on, so it is offline after its first
poll; the test then feeds the pipeline a reading of its own (`read`), which the real rule
engine evaluates: a low pressure raises `pump_1.low_pressure` and an urgent ticket.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.batch import Batch
from gateway.config.models import Device, Profile, SiteConfig, SiteInfo
from gateway.config.rule_models import RuleFile
from gateway.config.web_models import WebConfig
from gateway.daemon import Gateway
from gateway.web import StatusPage

ALARM = "pump_1.low_pressure"
PASSWORD = "水泵房-2468"
WAIT = 10.0  # a guard against hanging, not a measurement

PROFILE = Profile.model_validate({
    "id": "booster_pump", "name": "加压泵", "system": "water_supply",
    "points": {
        "outlet_pressure": {"address": 0, "scale": 0.001, "unit": "MPa", "name": "出水压力"},
        "fault_code": {"address": 1, "name": "故障代码", "enum": {0: "无故障", 11: "电机过载"}},
    },
    "rules": [{
        "id": "low_pressure", "name": "出水压力低", "when": "outlet_pressure < 0.2",
        "clear": "outlet_pressure > 0.25",
        "alarm": {"severity": "major", "message": "出水压力低 {outlet_pressure:.2f} MPa"},
        "ticket": {"category": "water", "title": "生活水泵出水压力低"},
    }],
})


def site(data_dir: Path, web: dict[str, Any] | None, *, allow: dict[str, Any] | None = None
         ) -> SiteConfig:
    """pump_1 in 1号楼, pump_2 with no building (site-wide), pump_spare disabled."""
    devices = [
        Device.model_validate({
            "id": "pump_1", "name": "1号楼生活水泵", "profile": "booster_pump",
            "connection": {"type": "modbus_tcp", "host": "127.0.0.1", "port": _closed_port(),
                           "timeout": 0.1},
            "poll_interval": 3600, "retries": 0, "offline_after": 1,
            "location": {"building": "1号楼", "floor": "B1", "room": "水泵房"},
        }),
        Device.model_validate({
            "id": "pump_2", "profile": "booster_pump",
            "connection": {"type": "modbus_tcp", "host": "127.0.0.1", "port": _closed_port(),
                           "timeout": 0.1},
            "poll_interval": 3600, "retries": 0, "offline_after": 1,
        }),
        Device.model_validate({
            "id": "pump_spare", "profile": "booster_pump", "enabled": False,
            "connection": {"type": "modbus_tcp", "host": "127.0.0.1", "port": _closed_port()},
        }),
    ]
    data: dict[str, Any] = {"site": SiteInfo(id="web_site", name="阳光花园"), "data_dir": data_dir,
                            "profiles": {"booster_pump": PROFILE}, "devices": devices,
                            "rule_files": [RuleFile()]}
    if web is not None:
        data["web"] = WebConfig.model_validate(web)
    if allow is not None:  # upstream.commands.allow without an upstream broker to reach
        data["upstream"] = {"host": "127.0.0.1", "port": _closed_port(),
                            "commands": {"enabled": False, "allow": allow}}
    return SiteConfig(**data)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Running:
    gateway: Gateway
    page: StatusPage
    http: aiohttp.ClientSession
    password_file: Path

    @property
    def url(self) -> str:
        return self.page.url.rstrip("/")

    def read(self, **values: Any) -> None:
        """A reading of pump_1 into the real pipeline (rules run on it)."""
        self.gateway.pipeline.emit_batch(Batch("pump_1", time.time(), tuple(values), list(values.values())))

    async def state(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/api/state") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def login(self, password: str = PASSWORD, login: str = "admin") -> dict[str, Any]:
        async with self.http.post(f"{self.url}/api/login",
                                  json={"login": login, "password": password}) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def post(self, path: str, body: Any = None, *, csrf: str | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        sent = dict(headers or {})
        if csrf is not None:
            sent["X-CSRF-Token"] = csrf
        async with self.http.post(f"{self.url}{path}", json=body if body is not None else {},
                                  headers=sent) as response:
            return response.status, await response.json()


@asynccontextmanager
async def running_site(web: dict[str, Any] | None = None, *, password: str | None = PASSWORD,
                       allow: dict[str, Any] | None = None,
                       clock: Callable[[], float] = time.time) -> AsyncIterator[Running]:
    """The gateway started, its status page on 127.0.0.1:<free port>, both pumps offline.

    `clock` is the rule engine's (SLA countdowns are on it)."""
    # a short data dir: the control socket's path must fit in 107 bytes
    data_dir = Path(tempfile.mkdtemp(prefix="gw-web-"))
    password_file = data_dir.parent / f"{data_dir.name}.password"
    web = {"listen": "127.0.0.1:0", **(web or {})}
    if password is not None:
        password_file.write_text(f"admin:{password}\nengineer:tw0-pumps\n", encoding="utf-8")
        password_file.chmod(0o600)
        web.setdefault("password_file", str(password_file))
    gateway = Gateway(site(data_dir, web, allow=allow), clock=clock)
    await gateway.start()
    # the gateway's own page once the daemon starts it (`web:` is set), else one beside it
    page = getattr(gateway, "web", None)
    own = page is None
    if own:
        page = StatusPage(gateway)
        await page.start()
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await until(lambda: all(h.online is False for h in gateway.health.values()), "pumps offline")
        yield Running(gateway, page, http, password_file)
    finally:
        await http.close()
        if own:
            await page.stop()
        await gateway.stop(budget=2.0)
        shutil.rmtree(data_dir, ignore_errors=True)
        password_file.unlink(missing_ok=True)


async def until(predicate: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
