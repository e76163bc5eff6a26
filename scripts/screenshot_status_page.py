"""Screenshots of the status page for the README: a real gateway polling the site
simulator over Modbus TCP, a few faults played, Debian's headless Chromium.

    .venv/bin/python scripts/screenshot_status_page.py            # docs/images/status-page*.png
    .venv/bin/python scripts/screenshot_status_page.py --out /tmp

Needs the Debian packages chromium and chromium-driver (scripts/test installs them), and
a CJK font (fonts-noto-cjk) for the Chinese to show. tests/integration/test_web_browser.py
uses `demo_site` and `open_chromium` from here, so what the README shows is what is tested.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make simsite, services and gateway importable
    sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service as DriverService  # noqa: E402
from services import CHROMEDRIVER, CHROMIUM, free_port, require  # noqa: E402
from simsite import SimulatedSite  # noqa: E402

from gateway.config.loader import load_site  # noqa: E402
from gateway.config.models import SiteConfig  # noqa: E402
from gateway.config.web_models import WebConfig  # noqa: E402
from gateway.daemon import Gateway  # noqa: E402
from gateway.web import StatusPage  # noqa: E402

# The example site's Modbus devices of building 1; the others are disabled, as a site
# engineer would, so their site rules rest.
DEVICES = ("pump_b1_1", "sump_b1_1", "lift_b1_1", "fire_panel_main", "meter_b1_main",
           "water_b1_main", "door_b1_io")
MORNING = datetime(2026, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
PASSWORD = "pump-room-2468"
PHONE = (375, 812)
DESKTOP_WIDTH = 1280
WAIT = 30.0  # a guard against hanging, not a measurement


def demo_config(data_dir: Path, password_file: Path, devices: tuple[str, ...] = DEVICES) -> SiteConfig:
    """config/site.yaml's `devices` on free ports, polled fast, the status page on
    127.0.0.1:<free port> with `password_file`; every other device disabled."""
    config = load_site(ROOT / "config" / "site.yaml")
    chosen = [
        device.model_copy(update={
            "connection": device.connection.model_copy(update={"port": free_port(), "timeout": 0.3}),
            "poll_interval": 0.5, "poll_groups": {g: 0.5 for g in device.poll_groups},
        })
        for device in config.devices if device.id in devices
    ]
    rest = [d.model_copy(update={"enabled": False}) for d in config.devices if d.id not in devices]
    web = WebConfig.model_validate({"listen": "127.0.0.1:0", "password_file": str(password_file)})
    return config.model_copy(update={
        "devices": chosen + rest, "data_dir": data_dir, "web": web,
        "outbox": config.outbox.model_copy(update={"flush_interval": 0.05}),
    })


@dataclass
class Demo:
    sim: SimulatedSite
    gateway: Gateway
    page: StatusPage
    password: str

    async def until(self, predicate, what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def alarm_state(self, alarm: str) -> str | None:
        return next((a["state"] for a in self.gateway.rules.alarms() if a["alarm"] == alarm), None)


@asynccontextmanager
async def demo_site(devices: tuple[str, ...] = DEVICES) -> AsyncIterator[Demo]:
    """The simulator, a gateway polling it and its status page, every device read once.

    The simulator's clock stands still (tick=3600): only a fault changes what it serves,
    so a value on the page can be compared with the simulator's exactly.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="gw-page-"))  # short: the control socket's path
    password_file = data_dir / "web.password"
    password_file.write_text(f"admin:{PASSWORD}\n", encoding="utf-8")
    password_file.chmod(0o600)
    config = demo_config(data_dir, password_file, devices)
    sim = SimulatedSite(config, seed=11, tick=3600, start=MORNING)
    await sim.start()
    gateway = Gateway(config)
    own: StatusPage | None = None
    try:
        await gateway.start()
        # the gateway's own page once the daemon starts it (`web:` is set), else one beside it
        page = getattr(gateway, "web", None)
        if page is None:
            page = own = StatusPage(gateway)
            await page.start()
        demo = Demo(sim, gateway, page, PASSWORD)
        await demo.until(lambda: set(devices) <= set(gateway.pipeline.current()), "a reading of every device")
        yield demo
    finally:
        if own is not None:
            await own.stop()
        await gateway.stop(budget=2.0)
        await sim.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def open_chromium(languages: str = "zh-CN,zh") -> webdriver.Chrome:
    """Debian's headless Chromium through Debian's chromedriver, given by path: Selenium
    Manager is never asked, nothing is downloaded. RuntimeError naming the package when
    either is missing."""
    require(CHROMIUM)
    require(CHROMEDRIVER)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-extensions", "--no-first-run", f"--lang={languages.split(',')[0]}",
                     f"--window-size={DESKTOP_WIDTH},900"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": languages})
    return webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)


def screen(driver: webdriver.Chrome, width: int, height: int, scale: float = 1.0,
           mobile: bool = False) -> None:
    """Make the page's viewport exactly width × height CSS pixels (a phone with `mobile`)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})


def _has_cjk_font() -> bool:
    try:
        listed = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(listed.stdout.strip())


async def _take(out: Path) -> list[Path]:
    async with demo_site() as demo:
        await demo.sim.set_fault("pump_b1_1", "pump_trip")
        await demo.sim.set_fault("lift_b1_1", "elevator_stuck")
        await demo.sim.set_fault("door_b1_io", "stop_answering")
        await demo.until(lambda: demo.alarm_state("pump_b1_1.pump_trip") == "active_unacknowledged"
                         and demo.alarm_state("lift_b1_1.passengers_trapped") is not None
                         and demo.gateway.health["door_b1_io"].online is False, "the faults")
        # one acknowledged, as the monitoring centre would have done
        await demo.gateway.commands.handle(
            b'{"id": "shot-1", "type": "ack_alarm", "alarm": "lift_b1_1.passengers_trapped"}',
            via="web:admin")
        await asyncio.sleep(3)  # two polls of the page: everything drawn
        return await asyncio.to_thread(_shoot, demo.page.url, out)


def _shoot(url: str, out: Path) -> list[Path]:
    driver = open_chromium()
    try:
        desktop, phone = out / "status-page.png", out / "status-page-phone.png"
        screen(driver, DESKTOP_WIDTH, 900)
        driver.get(url)
        time.sleep(2.5)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        screen(driver, DESKTOP_WIDTH, int(height))
        time.sleep(0.5)
        driver.save_screenshot(str(desktop))
        screen(driver, *PHONE, scale=2, mobile=True)
        driver.get(url)
        time.sleep(2.5)
        driver.save_screenshot(str(phone))
        return [desktop, phone]
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images",
                        help="folder for status-page.png and status-page-phone.png")
    args = parser.parse_args(argv)
    if not _has_cjk_font():
        print("warning: no Chinese font found (apt-get install fonts-noto-cjk); "
              "the Chinese text will show as boxes", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(_take(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
