"""The energy configuration checked against the site: counters on numbers only, groups
made of the site's meters, ids that do not clash; every mistake located at file:line:col
with a suggestion where one helps."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import errors_of, write_site

from gateway.config.energy_loader import resolve_meter, site_meters
from gateway.config.loader import load_site

SITE = """\
site:
  id: test-site
  name: Test site
"""

# Lines 1-14 of profiles/water.yaml
WATER = """\
name: water meter
system: water_supply
points:
  total_volume:
    table: input
    address: 0
    type: uint32
    scale: 0.01
    unit: m³
    counter: true
  flow_rate: {table: input, address: 2, scale: 0.01, unit: m³/h}
  wire_break: {table: input, address: 3, bit: 0}
  serial: {table: holding, address: 0, type: uint32}
"""

POWER = """\
name: energy meter
system: power
points:
  energy_import: {table: input, address: 342, type: float32, unit: kWh, counter: true}
  energy_export: {table: input, address: 344, type: float32, unit: kWh, counter: true}
  voltage: {table: input, address: 0, type: float32, unit: V}
"""

DEVICES = """\
devices:
  - {id: water_main, profile: water, connection: {host: 127.0.0.1, port: 15001}}
  - {id: water_101, profile: water, connection: {host: 127.0.0.1, port: 15002},
     meter: {household: 1-1-101}}
  - {id: water_102, profile: water, connection: {host: 127.0.0.1, port: 15003},
     meter: {household: 1-1-102}}
  - {id: power_main, profile: power, connection: {host: 127.0.0.1, port: 15004}}
  - {id: power_light, profile: power, connection: {host: 127.0.0.1, port: 15005}}
"""

GOOD_ENERGY = """\
energy:
  groups:
    - id: b1_water
      commodity: water
      master: water_main
      members: [water_101, water_102]
    - id: b1_power
      commodity: electricity
      master: power_main.energy_import
      members: [power_light.energy_import]
  manual_meters:
    - {id: gas_101, commodity: gas, unit: m³, household: 1-1-101}
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def energy_site(root: Path, energy: str = GOOD_ENERGY, *, water: str = WATER,
                devices: str = DEVICES) -> Path:
    return write_site(root, {"site.yaml": SITE + energy, "profiles/pump.yaml": None,
                             "devices/b1.yaml": None, "profiles/water.yaml": water,
                             "profiles/power.yaml": POWER, "devices/meters.yaml": devices})


def groups(text: str) -> str:
    """An energy: block of one group (its lines from 4 on), after site.yaml's 3 lines."""
    return "energy:\n  groups:\n" + text


# --- what is valid -------------------------------------------------------------------------


def test_a_site_of_meters_groups_and_manual_meters_loads(in_tmp: Path) -> None:
    config = load_site(energy_site(in_tmp))

    assert [g.id for g in config.energy.groups] == ["b1_water", "b1_power"]
    meters = {m.key: m for m in site_meters(config)}
    assert set(meters) == {
        "water_main.total_volume", "water_101.total_volume", "water_102.total_volume",
        "power_main.energy_import", "power_main.energy_export",
        "power_light.energy_import", "power_light.energy_export", "gas_101.reading",
    }
    assert meters["water_101.total_volume"].household == "1-1-101"
    assert meters["gas_101.reading"].manual and meters["gas_101.reading"].commodity == "gas"
    assert meters["power_main.energy_import"].commodity == "electricity"  # from kWh


def test_a_meter_may_be_in_two_groups_of_the_same_kind(in_tmp: Path) -> None:
    load_site(energy_site(in_tmp, groups("""\
    - {id: tenant_a, commodity: water, kind: tenant, members: [water_101]}
    - {id: tenant_b, commodity: water, kind: tenant, members: [water_101, water_102]}
""")))


def test_a_device_name_means_its_one_counter_of_the_groups_commodity(in_tmp: Path) -> None:
    meters = site_meters(load_site(energy_site(in_tmp)))

    found = resolve_meter("water_main", "water", meters)
    assert not isinstance(found, str) and found.key == "water_main.total_volume"
    assert resolve_meter("power_main", "electricity", meters) == (
        "power_main has 2 electricity counters; write power_main.energy_import or "
        "power_main.energy_export")


def test_a_household_written_as_a_number_is_text(in_tmp: Path) -> None:
    devices = DEVICES.replace("household: 1-1-101", "household: 1201")
    config = load_site(energy_site(in_tmp, devices=devices))

    assert {m.household for m in site_meters(config)} >= {"1201"}


# --- groups ----------------------------------------------------------------------------------


def test_an_unknown_member_is_located_with_a_suggestion(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - id: b1_water
      commodity: water
      master: water_main
      members: [water_101, water_13]
"""))

    assert errors_of(site) == [
        "site.yaml:9:28 energy.groups[0].members[1]: 'water_13' is not a meter of the site; "
        "did you mean water_102?; a group's master and members are water meters: a device "
        "with a counter: point, device.point, or a manual meter"
    ]


def test_a_meter_of_another_commodity_is_refused(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - id: b1_water
      commodity: water
      master: power_main.energy_import
      members: [water_101]
"""))

    [error] = errors_of(site)
    assert error.startswith("site.yaml:8:15 energy.groups[0].master: "
                            "power_main.energy_import counts electricity, not water")


def test_a_device_with_two_counters_of_the_commodity_must_name_one(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - id: b1_power
      commodity: electricity
      master: power_main
      members: [power_light.energy_import]
"""))

    [error] = errors_of(site)
    assert error.startswith("site.yaml:8:15 energy.groups[0].master: power_main has 2 "
                            "electricity counters; write power_main.energy_import or "
                            "power_main.energy_export")


def test_a_point_that_is_not_a_counter_is_named_with_the_counters(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - id: b1_water
      commodity: water
      members: [water_101.flow_rate]
"""))

    [error] = errors_of(site)
    assert error.startswith("site.yaml:8:17 energy.groups[0].members[0]: 'flow_rate' is not "
                            "a counter of water_101 (its counters: total_volume)")


def test_the_same_meter_twice_in_one_group_is_refused_however_it_is_written(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - id: b1_water
      commodity: water
      master: water_main
      members: [water_101, water_102, water_101.total_volume]
"""))

    assert errors_of(site) == [
        "site.yaml:9:39 energy.groups[0].members[2]: water_101.total_volume is already "
        "members[0] (water_101) of this group; a meter counts once in a group"
    ]


def test_the_master_as_a_member_too_is_refused(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - id: b1_water
      commodity: water
      master: water_main
      members: [water_main.total_volume]
"""))

    assert errors_of(site) == [
        "site.yaml:9:17 energy.groups[0].members[0]: water_main.total_volume is already the "
        "master (water_main) of this group; a meter counts once in a group"
    ]


def test_a_group_id_that_is_a_device_id_is_refused(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - {id: water_main, commodity: water, members: [water_101]}
"""))

    [error] = errors_of(site)
    assert error.startswith("site.yaml:6:12 energy.groups[0].id: 'water_main' is already a "
                            "device id; a group is a device of its own")


def test_two_groups_with_one_id_are_refused(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - {id: b1, commodity: water, members: [water_101]}
    - {id: b1, commodity: water, members: [water_102]}
"""))

    assert errors_of(site) == [
        "site.yaml:7:12 energy.groups[1].id: group 'b1' is already groups[0]; group ids "
        "must be unique"
    ]


def test_a_manual_meter_in_a_group_of_its_commodity_is_a_meter(in_tmp: Path) -> None:
    load_site(energy_site(in_tmp, """\
energy:
  groups:
    - {id: b1_water, commodity: water, master: water_main, members: [water_101, water_103]}
  manual_meters:
    - {id: water_103, commodity: water, unit: m³, household: 1-1-103}
"""))


# --- manual meters ---------------------------------------------------------------------------


def test_a_manual_meter_with_a_device_id_is_refused(in_tmp: Path) -> None:
    site = energy_site(in_tmp, """\
energy:
  manual_meters:
    - {id: water_101, commodity: water}
    - {id: gas_1, commodity: gas}
    - {id: gas_1, commodity: gas}
""")

    assert errors_of(site) == [
        "site.yaml:6:12 energy.manual_meters[0].id: 'water_101' is already a device id; "
        "a manual meter needs an id of its own",
        "site.yaml:8:12 energy.manual_meters[2].id: manual meter 'gas_1' is already "
        "manual_meters[1]; manual meter ids must be unique",
    ]


def test_an_empty_household_is_refused(in_tmp: Path) -> None:
    site = energy_site(in_tmp, """\
energy:
  manual_meters:
    - {id: gas_1, commodity: gas, household: "  "}
""")

    [error] = errors_of(site)
    assert error.startswith("site.yaml:6:46 energy.manual_meters[0].household: household is empty")


# --- counters and meter blocks -------------------------------------------------------------


def test_a_counter_on_a_bit_is_refused_at_its_key(in_tmp: Path) -> None:
    water = WATER.replace("  wire_break: {table: input, address: 3, bit: 0}",
                          "  wire_break: {table: input, address: 3, bit: 0, counter: true}")
    site = energy_site(in_tmp, "", water=water)

    assert errors_of(site) == [
        "profiles/water.yaml:12:50 points.wire_break.counter: counter: marks a cumulative "
        "number (kWh, m³); wire_break is of type bool, not a number"
    ]


def test_a_counter_whose_unit_says_nothing_must_name_its_commodity(in_tmp: Path) -> None:
    water = WATER.replace("  serial: {table: holding, address: 0, type: uint32}",
                          "  serial: {table: holding, address: 0, type: uint32, counter: true}")
    site = energy_site(in_tmp, "", water=water)

    [error] = errors_of(site)
    assert error.startswith("profiles/water.yaml:13:54 points.serial.counter: what does serial "
                            "count? it has no unit:; write counter: {commodity: water}")


def test_a_counter_that_names_its_commodity_needs_no_unit(in_tmp: Path) -> None:
    water = WATER.replace("  serial: {table: holding, address: 0, type: uint32}",
                          "  pulses: {table: holding, address: 4, type: uint32, "
                          "counter: {commodity: water}}")
    config = load_site(energy_site(in_tmp, "", water=water))

    assert "water_101.pulses" in {m.key for m in site_meters(config)}


def test_a_meter_block_on_a_device_without_counters_is_refused(in_tmp: Path) -> None:
    power = POWER.replace(", counter: true", "")
    site = energy_site(in_tmp, "")
    (in_tmp / "profiles" / "power.yaml").write_text(power, encoding="utf-8")
    devices = DEVICES.replace("{id: power_light, profile: power, connection: {host: 127.0.0.1, "
                              "port: 15005}}", "{id: power_light, profile: power, connection: "
                              "{host: 127.0.0.1, port: 15005}, meter: {household: 1-1-101}}")
    (in_tmp / "devices" / "meters.yaml").write_text(devices, encoding="utf-8")

    [error] = errors_of(site)
    assert error.startswith("devices/meters.yaml:8:83 devices[4].meter: power_light has no "
                            "counter: its profile power marks no point with counter:")


def test_a_night_flow_threshold_on_an_electricity_meter_is_refused(in_tmp: Path) -> None:
    devices = DEVICES.replace("port: 15005}}", "port: 15005},\n     meter: {night_flow_threshold: 0.1}}")
    site = energy_site(in_tmp, "", devices=devices)

    [error] = errors_of(site)
    assert error.startswith("devices/meters.yaml:9:14 devices[4].meter.night_flow_threshold: "
                            "night_flow_threshold is for water meters; power_light's counters "
                            "count electricity")


def test_group_members_are_not_checked_when_a_device_file_is_broken(in_tmp: Path) -> None:
    site = energy_site(in_tmp, devices=DEVICES + "  - {id: broken, profile: nope, connection: {host: x}}\n")

    errors = errors_of(site)
    assert len(errors) == 1 and "'nope' is not a known profile" in errors[0]


def test_the_example_site_is_valid() -> None:
    config = load_site(Path(__file__).resolve().parents[2] / "config" / "site.yaml")

    groups_by_id = {g.id: g for g in config.energy.groups}
    assert groups_by_id["b1_water"].master == "water_b1_main"
    assert {m.key for m in site_meters(config)} >= {
        "water_b1_main.total_volume", "water_b1_u1.total_volume", "water_b1_u2.total_volume",
        "meter_b1_main.energy_import", "meter_b1_lighting.energy_import",
    }


def test_a_group_id_clashing_with_a_device_is_reported_once(in_tmp: Path) -> None:
    site = energy_site(in_tmp, groups("""\
    - {id: water_main, commodity: water, master: water_101, members: [water_102]}
"""))

    [error] = errors_of(site)
    assert "'water_main' is already a device id" in error
