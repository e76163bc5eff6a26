"""The tutorial of docs/device-maps.md stays true: its files load with the real loader,
the text shows exactly those files, its register table decodes through the compiled
read plan to the values it claims, and its rule raises the alarm and ticket it shows.

The doc marks what is checked with HTML comments before a block: `<!-- file: PATH -->`
(the block is that file, or one part of it: the parts, joined by a blank line, are the
file) and `<!-- check: WHAT -->` (a table or an example this file checks).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus.decode import codec_for
from drivers.modbus.plan import compile_plans
from gateway.batch import Batch, Event, Quality
from gateway.config.errors import ConfigError
from gateway.config.loader import load_site
from gateway.config.models import Device, ModbusPoint, Profile, SiteConfig
from gateway.config.yaml_source import parse_yaml
from rules.engine.engine import RuleEngine

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "device-maps.md"
TUTORIAL = ROOT / "docs" / "examples" / "tutorial"
DEVICE = "fan_b2_exhaust_1"
PROFILE = "carpark_fan_vfd"

_MARKED_BLOCK = re.compile(r"^<!-- (file|check): ([^>]+?) -->\n```[a-z]*\n(.*?)^```", re.S | re.M)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def marked_blocks(kind: str, name: str | None = None) -> list[tuple[str, str]]:
    """(name, content) of the blocks marked `<!-- kind: name -->`, in the doc's order."""
    return [(found, body) for what, found, body in _MARKED_BLOCK.findall(doc_text())
            if what == kind and (name is None or found == name)]


def marked_table(name: str) -> list[list[str]]:
    """The cells of each body row of the table after `<!-- check: name -->`."""
    text = doc_text()
    start = text.index(f"<!-- check: {name} -->")
    lines = text[start:].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(rows) > 2, f"no table after the {name} marker"
    return rows[2:]  # past the header and its rule


def hex_words(cell: str) -> list[int]:
    return [int(word, 16) for word in cell.strip("`").split()]


def claimed(cell: str) -> Any:
    """The value a table cell claims: its first word, as a bool or a number."""
    word = cell.split()[0]
    if word in ("true", "false"):
        return word == "true"
    return float(word) if "." in word else int(word)


@pytest.fixture(scope="module")
def site() -> SiteConfig:
    return load_site(TUTORIAL / "site.yaml")


@pytest.fixture(scope="module")
def register_table() -> list[tuple[str, int, list[int], Any]]:
    """(point, address, raw words, value) of each row of the tutorial's register table."""
    return [(point.strip("`"), int(address.removesuffix("H"), 16), hex_words(raw), claimed(value))
            for point, address, raw, value in marked_table("registers")]


def register_image(table: list[tuple[str, int, list[int], Any]]) -> dict[int, int]:
    image: dict[int, int] = {}
    for _point, address, words, _value in table:
        for offset, word in enumerate(words):
            assert image.setdefault(address + offset, word) == word, f"{address + offset:04X}H twice"
    return image


def poll(device: Device, profile: Profile, image: dict[int, int]) -> Iterator[tuple[str, Any, str]]:
    """(point, value, quality) for every point of every poll group, read from `image` the
    way the driver reads a device: the compiled plan's requests and decoders."""
    for plan in compile_plans(device, profile).values():
        values: list[Any] = [None] * len(plan.points)
        problems: dict[int, str] = {}
        for request in plan.requests:
            assert request.table == "holding"
            registers = [image.get(address, 0) for address in range(request.start, request.end)]
            problems.update(request.decode_into(registers, values) or {})
        for index, point in enumerate(plan.points):
            yield point, values[index], problems.get(index, Quality.GOOD)


def load_fake_drive() -> Any:
    spec = importlib.util.spec_from_file_location("fake_vfd", TUTORIAL / "bench" / "fake_vfd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the files -----------------------------------------------------------------------


def test_the_tutorial_site_loads_with_the_real_loader(site: SiteConfig):
    (device,) = site.devices
    profile = site.profiles[PROFILE]
    assert device.id == DEVICE and device.profile == PROFILE
    assert device.connection.type == "modbus_rtu"
    assert (device.connection.port, device.connection.unit) == ("/dev/rs485-b1", 3)
    assert len(profile.points) == 15
    assert [rule.id for rule in profile.rules] == ["heatsink_hot", "drive_fault"]
    assert site.upstream is not None and site.web is not None


def test_the_bench_site_is_the_tutorial_site_with_the_drive_over_tcp(site: SiteConfig):
    bench = load_site(TUTORIAL / "bench.yaml")
    (device,) = bench.devices
    (real,) = site.devices
    assert device.connection.type == "modbus_tcp"
    assert (device.connection.host, device.connection.port, device.connection.unit) == ("127.0.0.1", 15050, 3)
    same = ("id", "name", "profile", "poll_interval", "poll_groups", "location")
    assert {key: getattr(device, key) for key in same} == {key: getattr(real, key) for key in same}
    assert bench.profiles[PROFILE].model_dump() == site.profiles[PROFILE].model_dump()
    assert bench.upstream == site.upstream and bench.web == site.web and bench.site == site.site


def test_every_file_the_tutorial_shows_is_the_file_itself():
    shown: dict[str, list[str]] = {}
    for name, body in marked_blocks("file"):
        shown.setdefault(name, []).append(body)
    assert set(shown) == {
        "docs/examples/tutorial/profiles/carpark_fan_vfd.yaml",
        "docs/examples/tutorial/devices/carpark_fans.yaml",
        "docs/examples/tutorial/site.yaml",
    }
    for name, parts in shown.items():
        assert "\n".join(parts) == (ROOT / name).read_text(encoding="utf-8"), f"{name} differs from the doc"


def test_the_error_the_doc_shows_is_the_one_check_gives_without_the_table(tmp_path: Path):
    profile = (TUTORIAL / "profiles" / f"{PROFILE}.yaml").read_text(encoding="utf-8")
    without = "".join(line for line in profile.splitlines(keepends=True)
                      if not line.lstrip().startswith("table: holding"))
    assert without != profile
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / f"{PROFILE}.yaml").write_text(without, encoding="utf-8")
    (tmp_path / "site.yaml").write_text("site: {id: t, name: t}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_site(tmp_path / "site.yaml")
    (issue,) = caught.value.issues
    shown = f"carpark_fan_vfd.yaml:{issue.line}:{issue.col} {str(issue).split(' ', 1)[1]}"
    assert shown in doc_text()


# -- the register table --------------------------------------------------------------


def test_the_register_table_decodes_to_the_values_the_doc_claims(site: SiteConfig, register_table):
    (device,) = site.devices
    profile = site.profiles[PROFILE]
    decoded = {point: (value, quality) for point, value, quality in poll(device, profile, register_image(register_table))}
    assert [row[0] for row in register_table] == list(profile.points), "one row per point, in profile order"
    for point, address, _words, value in register_table:
        assert profile.points[point].address == address, f"{point}: the doc's address is not the profile's"
        assert decoded[point] == (value, Quality.GOOD), f"{point}: the doc claims {value!r}"
        assert type(decoded[point][0]) is type(value), f"{point}: {decoded[point][0]!r} is not {value!r}"


def test_the_scaled_values_are_the_ones_a_display_shows(site: SiteConfig, register_table):
    values = {point: value for point, value, _q in poll(site.devices[0], site.profiles[PROFILE],
                                                        register_image(register_table))}
    assert values["frequency"] == 45.23 and values["energy"] == 138765.4
    assert values["heatsink_temp"] == 45.0 and values["fault_code"] == 0


def test_the_fake_drive_serves_exactly_the_register_table(register_table):
    assert register_image(register_table) == load_fake_drive().REGISTERS


def test_a_hot_fake_drive_reads_72_degrees(site: SiteConfig):
    drive = load_fake_drive().FakeDrive()
    drive.command("hot")
    values = {point: value for point, value, _q in poll(site.devices[0], site.profiles[PROFILE], drive.words)}
    assert values["heatsink_temp"] == 72.0


def test_wrong_word_order_and_sign_give_the_absurd_values_the_doc_names(site: SiteConfig, register_table):
    profile = site.profiles[PROFILE]
    words = {point: raw for point, _address, raw, _value in register_table}
    text = " ".join(doc_text().split())
    for point, absurd in (("run_hours", 1005453312), ("energy", 74697934.9)):
        as_abcd = codec_for(profile.points[point].model_copy(update={"order": None}), "ABCD")
        assert as_abcd.decode(words[point]) == absurd
        assert f"{absurd} " in text
    heatsink = profile.points["heatsink_temp"]
    assert codec_for(heatsink, profile.order).decode([0xFF9C]) == -10.0
    as_unsigned = heatsink.model_copy(update={"type": "uint16"})
    unsigned = codec_for(as_unsigned.model_copy(update={"min": None, "max": None}), profile.order)
    assert unsigned.decode([0xFF9C]) == 6543.6
    assert "`0xFF9C`: −10.0 °C" in text and "6543.6 °C" in text
    # and a map written with the wrong type shows it: out of range, no value
    points = {**profile.points, "heatsink_temp": as_unsigned}
    wrong = profile.model_copy(update={"points": points})
    read = {point: (value, quality) for point, value, quality in poll(site.devices[0], wrong, {0x1007: 0xFF9C})}
    assert read["heatsink_temp"] == (None, Quality.OUT_OF_RANGE)


def test_the_addressing_table_names_one_register_three_ways():
    rows = marked_table("addressing")
    assert len(rows) == 3
    for _manual, addressing, addresses in rows:
        mode = addressing.split("`")[1]
        for written in re.findall(r"`([0-9a-fx]+)`", addresses):
            point = ModbusPoint.model_validate({"address": int(written, 0)}, context={"addressing": mode})
            assert (point.table, point.address) == ("holding", 0x1001), f"{written} with {mode}"


def test_hex_and_leading_zero_addresses_read_as_the_doc_warns():
    data = parse_yaml("a: {address: 0x1001}\nb: {address: 010}\n", "profile.yaml").data
    assert (data["a"]["address"], data["b"]["address"]) == (4097, 8)
    text = " ".join(doc_text().split())  # as read, whatever the line breaks
    assert "reads `address: 0x1001` as 4097" in text and "reads `010` as an octal number, 8" in text


# -- the rule ------------------------------------------------------------------------


def test_the_tutorial_rule_raises_the_alarm_and_opens_the_ticket_the_doc_shows(site, tmp_path):
    drive = load_fake_drive().FakeDrive()
    drive.command("hot")  # the heatsink at 72.0 °C, as on the bench
    device, profile = site.devices[0], site.profiles[PROFILE]
    values = {point: value for point, value, _q in poll(device, profile, drive.words)}
    plans = compile_plans(device, profile).values()
    now = [1_795_449_000.0]
    engine = RuleEngine(site, tmp_path, clock=lambda: now[0])
    out: list[Any] = list(engine.open())
    try:
        for _ in range(14):  # a poll every 5 s for 65 s: past the rule's minute
            for plan in plans:
                out += engine.process(Batch(DEVICE, now[0], plan.points, [values[p] for p in plan.points]))
            now[0] += 5.0
            out += engine.tick(now[0])
    finally:
        engine.close()
    events = [e.body for e in out if isinstance(e, Event)]
    raised = [e for e in events if e.get("transition") == "raised"]
    assert [(e["alarm"], e["severity"]) for e in raised] == [(f"{DEVICE}.heatsink_hot", "minor")]
    assert f'"message":"{raised[0]["message"]}"' in doc_text(), "the doc shows another message"
    opened = [e for e in events if e.get("event") == "opened"]
    assert len(opened) == 1
    ticket = opened[0]["state"]
    assert (ticket["fault"], ticket["category"], ticket["priority"]) == ("heatsink_hot", "hvac", "normal")
    shown = '"fault":"heatsink_hot","kind":"corrective","category":"hvac","state":"open","priority":"normal"'
    assert shown in doc_text(), "the doc shows another ticket"


# -- the reference's examples ----------------------------------------------------------


def test_the_reference_examples_load_as_a_site(tmp_path: Path):
    """The reference's whole profiles and its device example, as files of one site."""
    (tmp_path / "site.yaml").write_text("site: {id: reference, name: reference}\n", encoding="utf-8")
    (tmp_path / "profiles").mkdir()
    profiles = marked_blocks("check", "profile")
    assert len(profiles) == 3
    for number, (_name, body) in enumerate(profiles):
        if not body.startswith("id:") and "\nid:" not in body:  # the BACnet and MQTT fragments
            body = f"id: example_{number}\nname: example\nsystem: hvac\n{body}"
        (tmp_path / "profiles" / f"example_{number}.yaml").write_text(body, encoding="utf-8")
    ((_name, devices),) = marked_blocks("check", "devices")
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "example.yaml").write_text(devices, encoding="utf-8")
    config = load_site(tmp_path / "site.yaml")
    assert {p.protocol for p in config.profiles.values()} == {"modbus", "bacnet", "mqtt"}
    assert [d.id for d in config.devices] == ["pump_b1_1"]
