"""The status page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver, against a real gateway polling the site simulator over Modbus TCP.

The simulator's clock stands still, so the value the page shows can be compared with the
one the simulator serves. Selenium blocks, so every browser step runs in a thread while
the gateway and the page go on serving on the test's event loop. A missing browser is an
error naming the Debian package to install (scripts/services.py `require`), never a skip.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from screenshot_status_page import PHONE, demo_site, open_chromium, screen  # noqa: E402

from gateway.commands.audit import read_entries  # noqa: E402

pytestmark = pytest.mark.integration

ALARM = "pump_b1_1.pump_trip"
WAIT = 20.0  # a guard against hanging, not a measurement
STATIC = ROOT / "gateway" / "web" / "static"


def _wait(driver: WebDriver, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"the page never showed {what}")


def _point(driver: WebDriver, device: str, point: str) -> dict[str, str] | None:
    """The page's cell for one point, read in one go (the page redraws every 2 s)."""
    return driver.execute_script(
        "const v = document.querySelector(`[data-device='${arguments[0]}'] "
        "[data-point='${arguments[1]}'] .value`);"
        "return v && {text: v.textContent, value: v.dataset.value};", device, point)


def _alarm(driver: WebDriver, alarm: str) -> dict[str, Any] | None:
    return driver.execute_script(
        "const c = document.querySelector(`[data-alarm='${arguments[0]}']`);"
        "return c && {state: c.dataset.state, text: c.querySelector('.alarm-state').textContent,"
        " button: !!c.querySelector('button[data-ack]')};", alarm)


async def test_the_page_shows_the_simulators_value_and_an_acknowledge_click_lands(
        tmp_path: Path) -> None:
    async with demo_site(("pump_b1_1", "meter_b1_main")) as demo:
        served = demo.sim.value("pump_b1_1", "outlet_pressure")
        driver = await asyncio.to_thread(open_chromium, "en-US,en")
        try:
            await asyncio.to_thread(driver.get, demo.page.url)
            shown = await asyncio.to_thread(
                _wait, driver, lambda d: (_point(d, "pump_b1_1", "outlet_pressure") or {}).get("value"),
                "the pump's outlet pressure")
            cell = _point(driver, "pump_b1_1", "outlet_pressure")
            assert float(shown) == pytest.approx(served, rel=1e-9, abs=1e-12)
            assert float(cell["text"]) == pytest.approx(served, abs=0.0005)  # 3 decimals shown
            assert driver.find_element(By.CSS_SELECTOR, "[data-device='pump_b1_1'] .online").text == "online"

            # the drive trips: the alarm appears on the page by itself (it polls)
            await demo.sim.set_fault("pump_b1_1", "pump_trip")
            trip = demo.sim.value("pump_b1_1", "fault_code")
            await asyncio.to_thread(
                _wait, driver, lambda d: (_alarm(d, ALARM) or {}).get("button"), "the pump trip alarm")
            assert _alarm(driver, ALARM)["state"] == "active_unacknowledged"
            live = await asyncio.to_thread(
                _wait, driver, lambda d: (_point(d, "pump_b1_1", "fault_code") or {}).get("value") == str(trip),
                "the trip code")
            assert live and trip != 0

            # acknowledge: the page asks for a login first, then acknowledges
            await asyncio.to_thread(_click_acknowledge_and_log_in, driver, demo.password)
            acked = await asyncio.to_thread(
                _wait, driver, lambda d: (a := _alarm(d, ALARM)) and a["state"] == "active_acknowledged" and a,
                "the alarm acknowledged")
            assert acked["text"] == "acknowledged" and acked["button"] is False
            await asyncio.to_thread(driver.save_screenshot, str(tmp_path / "acknowledged.png"))
        finally:
            await asyncio.to_thread(driver.quit)

        alarm = demo.gateway.rules.alarm(ALARM)
        assert (alarm["state"], alarm["acknowledged_by"]) == ("active_acknowledged", "web:admin")
        (entry,) = [e for e in read_entries(demo.gateway.data_dir / "audit.jsonl")
                    if e.get("type") == "ack_alarm"]
        assert (entry["via"], entry["target"], entry["outcome"]) == ("web:admin", ALARM, "accepted")


def _click_acknowledge_and_log_in(driver: WebDriver, password: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"[data-alarm='{ALARM}'] button[data-ack]").click()
    _wait(driver, lambda d: d.find_element(By.ID, "login-layer").is_displayed(), "the login form")
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    _wait(driver, lambda d: "admin" in d.find_element(By.ID, "me").text, "the login")


async def test_on_a_phone_the_page_fits_the_screen_and_switches_between_chinese_and_english(
        tmp_path: Path) -> None:
    async with demo_site(("pump_b1_1", "lift_b1_1")) as demo:
        await demo.sim.set_fault("pump_b1_1", "pump_trip")
        await demo.until(lambda: demo.alarm_state(ALARM) == "active_unacknowledged", "the alarm")
        driver = await asyncio.to_thread(open_chromium, "zh-CN,zh")
        try:
            seen = await asyncio.to_thread(_phone_checks, driver, demo.page.url, tmp_path)
        finally:
            await asyncio.to_thread(driver.quit)
    assert seen["width"] == PHONE[0]
    assert seen["scroll_width"] <= PHONE[0]  # nothing sticks out sideways
    assert seen["button"]["right"] <= PHONE[0] and seen["button"]["height"] >= 44  # a finger's size
    assert seen["zh"] == {"alarms": "告警", "systems": ["电梯", "二次供水"], "button": "确认",
                          "online": "在线"}
    assert seen["en"] == {"alarms": "Alarms", "systems": ["Elevators", "Water supply"],
                          "button": "Acknowledge", "online": "online"}
    assert seen["after_reload"] == "Alarms"  # the choice is kept
    assert seen["back"] == "告警"
    assert seen["untranslated"] == []  # every word the page uses, in both languages


def _phone_checks(driver: WebDriver, url: str, tmp_path: Path) -> dict[str, Any]:
    screen(driver, *PHONE, mobile=True)
    driver.get(url)
    _wait(driver, lambda d: _alarm(d, ALARM), "the alarm")
    _wait(driver, lambda d: (_point(d, "pump_b1_1", "outlet_pressure") or {}).get("text"), "a value")
    words = ("return {alarms: document.querySelector('#alarms h2 span').textContent,"
             " systems: Array.from(document.querySelectorAll('#devices h4'), h => h.textContent),"
             " button: document.querySelector('button[data-ack]').textContent,"
             " online: document.querySelector(`[data-device='pump_b1_1'] .online`).textContent};")
    box = driver.execute_script(
        "const r = document.querySelector('button[data-ack]').getBoundingClientRect();"
        "return {right: r.right, height: r.height};")
    seen: dict[str, Any] = {
        "width": driver.execute_script("return window.innerWidth"),
        "scroll_width": driver.execute_script("return document.documentElement.scrollWidth"),
        "button": box,
        "zh": driver.execute_script(words),
    }
    driver.save_screenshot(str(tmp_path / "phone-zh.png"))
    driver.find_element(By.ID, "lang").click()
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#alarms h2 span").text == "Alarms", "English")
    seen["en"] = driver.execute_script(words)
    driver.refresh()
    _wait(driver, lambda d: _alarm(d, ALARM), "the alarm after a reload")
    seen["after_reload"] = driver.find_element(By.CSS_SELECTOR, "#alarms h2 span").text
    driver.find_element(By.ID, "lang").click()
    seen["back"] = driver.find_element(By.CSS_SELECTOR, "#alarms h2 span").text
    seen["untranslated"] = driver.execute_script(_UNTRANSLATED, _words_used())
    return seen


def _words_used() -> list[str]:
    """The dictionary keys app.js and index.html ask for (`t("key")`, `data-i18n="key"`),
    and the ones app.js builds (the health line, a device's state)."""
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    built = {"health_OK", "health_DEGRADED", "online", "offline", "unknown", "maintenance"}
    return sorted(set(re.findall(r'\bt\("(\w+)"(?!\s*\+)', script))
                  | set(re.findall(r'data-i18n="(\w+)"', page)) | built)


# keys missing from a language: the words used, and each group's (states, systems ...) words
_UNTRANSLATED = """
const [zh, en] = [window.I18N.zh, window.I18N.en];
const missing = [];
for (const [lang, words] of [["zh", zh], ["en", en]]) {
  for (const key of arguments[0]) if (typeof words[key] !== "string") missing.push(`${lang}:${key}`);
}
for (const [group, words] of Object.entries(zh)) {
  if (typeof words !== "object") continue;
  const other = en[group] || {};
  for (const key of new Set([...Object.keys(words), ...Object.keys(other)])) {
    if (!(key in words) || !(key in other)) missing.push(`${group}.${key}`);
  }
}
return missing;
"""
