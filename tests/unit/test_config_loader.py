"""load_site: the example site loads, and every kind of mistake is named at its file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import DEVICES, PROFILE, SITE, errors_of, write_site

from gateway.config.loader import load_site

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, so messages show paths relative to it as an engineer would see them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the example site ------------------------------------------------------------


def test_the_example_site_loads_with_its_profiles_devices_and_chinese_names() -> None:
    config = load_site(REPO / "config" / "site.yaml")

    assert config.site.id == "demo-estate"
    assert config.site.name == "阳光花园 (Sunshine Garden)"
    assert config.site.timezone == "Asia/Shanghai"
    assert config.sinks == [] and config.upstream is None
    assert [s.type for s in config.all_sinks()] == ["history"]
    assert config.data_dir == REPO / "config" / "data"

    assert {"booster_pump", "energy_meter_3p"} <= set(config.profiles)
    pump = config.profiles["booster_pump"]
    assert pump.points["outlet_pressure"].name == "出水压力"
    assert pump.points["setpoint_pressure"].writable is True
    assert pump.points["run_hours"].type == "uint32"
    assert pump.source is not None and pump.source.endswith("booster_pump.yaml")
    meter = config.profiles["energy_meter_3p"]
    assert meter.points["energy_import"].address == 342
    assert meter.points["total_power"].table == "input"

    devices = {d.id: d for d in config.devices}
    assert {"pump_b1_1", "meter_b1_main"} <= set(devices)
    pump_1 = devices["pump_b1_1"]
    assert (pump_1.connection.host, pump_1.connection.port, pump_1.connection.unit) == ("127.0.0.1", 15020, 1)
    assert pump_1.poll_interval == 2.0
    assert pump_1.location.building == "1号楼" and pump_1.location.room == "水泵房"
    assert pump_1.source is not None and pump_1.source.endswith("building_1.yaml")
    assert devices["meter_b1_main"].connection.port == 15021
    assert devices["meter_b1_main"].profile == "energy_meter_3p"


def test_a_valid_site_loads_and_data_dir_is_relative_to_the_site_folder(tmp_path: Path) -> None:
    site = write_site(tmp_path, {"site.yaml": SITE + "data_dir: state\n"})

    config = load_site(site)

    assert config.data_dir == tmp_path / "state"
    assert config.source == site
    assert [d.id for d in config.devices] == ["pump_1"]


def test_a_profile_id_defaults_to_its_file_name(tmp_path: Path) -> None:
    config = load_site(write_site(tmp_path, {}))

    assert list(config.profiles) == ["pump"]
    assert config.profiles["pump"].source == str(tmp_path / "profiles" / "pump.yaml")


def test_chinese_ids_names_and_locations_load(tmp_path: Path) -> None:
    site = write_site(tmp_path, {
        "site.yaml": """\
            site:
              id: 阳光花园
              name: 阳光花园物业
            """,
        "profiles/水泵.yaml": """\
            name: 变频恒压供水泵
            system: 二次供水
            points:
              出水压力: {address: 2, scale: 0.001, unit: MPa, name: 出水压力}
            """,
        "profiles/pump.yaml": None,
        "devices/b1.yaml": """\
            devices:
              - id: 一号泵
                name: 1号楼生活水泵
                profile: 水泵
                connection: {host: 127.0.0.1}
                location: {building: 1号楼, floor: -1, room: 水泵房}
            """,
    })

    config = load_site(site)

    assert config.site.id == "阳光花园"
    assert config.profiles["水泵"].points["出水压力"].unit == "MPa"
    device = config.devices[0]
    assert (device.id, device.profile, device.location.floor) == ("一号泵", "水泵", "-1")


def test_include_patterns_are_relative_to_the_site_folder(tmp_path: Path) -> None:
    site = write_site(tmp_path, {
        "site.yaml": SITE + "include:\n  profiles: [maps/*.yaml]\n  devices: [equipment/**/*.yaml]\n",
        "profiles/pump.yaml": None,
        "devices/b1.yaml": None,
        "maps/pump.yaml": PROFILE,
        "equipment/b1/pumps.yaml": DEVICES,
    })

    config = load_site(site)

    assert list(config.profiles) == ["pump"]
    assert [d.id for d in config.devices] == ["pump_1"]


# --- one mistake, one located message ----------------------------------------------


def test_unknown_key_names_its_line_and_the_allowed_keys(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": """\
        devices:
          - id: pump_1
            profile: pump
            conection:
              host: 127.0.0.1
        """})

    assert errors_of(site) == [
        "devices/b1.yaml:2:5 devices[0]: missing required key 'connection' "
        "(e.g. {type: modbus_tcp, host: 192.168.1.20})",
        "devices/b1.yaml:4:5 devices[0].conection: 'conection' is not a known key here; "
        "allowed keys: id, name, profile, connection, poll_interval, poll_groups, order, limits, retries, offline_after, location, asset, meter, enabled; "
        "did you mean connection?",
    ]


def test_bad_data_type_lists_the_data_types_and_suggests_the_closest(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"profiles/pump.yaml": PROFILE.replace("type: uint16", "type: flot32")})

    assert errors_of(site) == [
        "profiles/pump.yaml:6:11 points.outlet_pressure.type: 'flot32' is not a data type; "
        "expected one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string, bcd16, bcd32; "
        "did you mean float32?"
    ]


def test_wrong_type_says_what_was_expected(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": DEVICES + "      port: http\n"})

    assert errors_of(site) == [
        "devices/b1.yaml:6:13 devices[0].connection.port: expected a whole number, got 'http'"
    ]


def test_a_bad_duration_shows_what_a_duration_looks_like(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": DEVICES + "    poll_interval: fast\n"})

    assert errors_of(site) == [
        "devices/b1.yaml:6:20 devices[0].poll_interval: 'fast' is not a duration; "
        "expected e.g. 5s, 500ms, 2m or 1h"
    ]


def test_a_missing_key_points_at_the_mapping_that_lacks_it(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": """\
        devices:
          - id: pump_1
            profile: pump
            connection:
              port: 502
        """})

    assert errors_of(site) == [
        "devices/b1.yaml:4:5 devices[0].connection: missing required key 'host' "
        "(the device's IP address or host name)"
    ]


def test_a_bad_sink_type_is_located_at_its_type(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": SITE + "sinks:\n  - type: influx\n    url: http://db:8086\n"})

    assert errors_of(site) == [
        "site.yaml:5:11 sinks[0].type: 'influx' is not a sink type; "
        "expected one of influxdb, history, mqtt; did you mean influxdb?"
    ]


def test_unknown_key_inside_a_sink_lists_that_sinks_keys(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": SITE + (
        "sinks:\n  - {type: history, retension: 7d}\n"
    )})

    [error] = errors_of(site)
    assert error.startswith("site.yaml:5:21 sinks[0].retension: 'retension' is not a known key here; "
                            "allowed keys: type, name, retention")
    assert error.endswith("did you mean retention?")


def test_an_invalid_id_explains_which_characters_are_allowed(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": DEVICES.replace("id: pump_1", "id: pump 1")})

    [error] = errors_of(site)
    assert error.startswith("devices/b1.yaml:2:9 devices[0].id: 'pump 1' is not a valid id;")
    assert "without spaces or slashes" in error


def test_bare_room_floor_and_serial_numbers_are_taken_as_text(in_tmp: Path) -> None:
    site = write_site(
        in_tmp,
        {"devices/b1.yaml": DEVICES + "    location: {floor: 3, room: 101}\n    asset: {serial: 20240051}\n"},
    )

    [device] = load_site(site).devices
    assert (device.location.floor, device.location.room, device.asset.serial) == ("3", "101", "20240051")


def test_a_number_where_text_belongs_suggests_quotes(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": DEVICES + "    name: 101\n"})

    assert errors_of(site) == [
        "devices/b1.yaml:6:11 devices[0].name: expected text, got 101; put it in quotes: '101'"
    ]


def test_devices_written_in_site_yaml_are_refused_with_where_they_belong(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": SITE + "devices: []\n"})

    [error] = errors_of(site)
    assert error.startswith("site.yaml:4:1 devices: devices are not written in site.yaml;")
    assert "devices/*.yaml" in error


def test_an_include_pattern_that_matches_nothing_is_reported(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": SITE + "include:\n  devices: [device/*.yaml]\n"})

    assert errors_of(site) == [
        "site.yaml:5:13 include.devices[0]: 'device/*.yaml' matches no files in ."
    ]


# --- mistakes across files ---------------------------------------------------------


def test_duplicate_device_id_names_both_places(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b2.yaml": """\
        devices:
          - id: pump_2
            profile: pump
            connection: {host: 127.0.0.2}
          - id: pump_1
            profile: pump
            connection: {host: 127.0.0.3}
        """})

    assert errors_of(site) == [
        "devices/b2.yaml:5:9 devices[1].id: device id 'pump_1' is already used by "
        "devices/b1.yaml:2:9; device ids must be unique across the site"
    ]


def test_unknown_profile_lists_the_known_ones_and_suggests_the_closest(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "profiles/meter.yaml": PROFILE.replace("booster pump", "meter"),
        "devices/b1.yaml": DEVICES.replace("profile: pump", "profile: pumps"),
    })

    assert errors_of(site) == [
        "devices/b1.yaml:3:14 devices[0].profile: 'pumps' is not a known profile; "
        "known profiles: meter, pump; did you mean pump?"
    ]


def test_duplicate_profile_id_names_both_files(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"profiles/pump2.yaml": "id: pump\n" + PROFILE})

    assert errors_of(site) == [
        "profiles/pump2.yaml:1:5 id: profile id 'pump' is already used by profiles/pump.yaml:1:1; "
        "profile ids must be unique"
    ]


def test_a_file_with_three_mistakes_reports_three(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"profiles/pump.yaml": """\
        name: booster pump
        system: water_supply
        points:
          outlet_pressure:
            address: 70000
            type: float23
            scale: high
        """})

    assert errors_of(site) == [
        "profiles/pump.yaml:5:14 points.outlet_pressure.address: must be at most 65535, got 70000",
        "profiles/pump.yaml:6:11 points.outlet_pressure.type: 'float23' is not a data type; "
        "expected one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string, bcd16, bcd32; "
        "did you mean float32?",
        "profiles/pump.yaml:7:12 points.outlet_pressure.scale: expected a number, got 'high'",
    ]


def test_a_misspelt_required_key_is_reported_as_unknown_and_as_missing(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"profiles/pump.yaml": PROFILE.replace("system:", "sytem:")})

    assert errors_of(site) == [
        "profiles/pump.yaml:1:1: missing required key 'system' (e.g. water_supply, power, hvac)",
        "profiles/pump.yaml:2:1 sytem: 'sytem' is not a known key here; allowed keys: id, name, "
        "system, protocol, vendor, model, description, order, addressing, limits, points, rules, maintenance; "
        "did you mean system?",
    ]


def test_mistakes_in_every_file_are_reported_together(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "site.yaml": SITE + "logging:\n  level: verbose\n",
        "profiles/pump.yaml": PROFILE + "  bad:\n    type: uint16\n",
        "devices/b1.yaml": DEVICES + "    enabled: maybe\n",
    })

    errors = errors_of(site)

    assert [e.split(" ")[0] for e in errors] == [
        "site.yaml:5:10", "profiles/pump.yaml:8:3", "devices/b1.yaml:6:14",
    ]


# --- YAML itself -------------------------------------------------------------------


def test_yaml_syntax_error_is_located_and_other_files_are_still_checked(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "profiles/pump.yaml": PROFILE.replace("address: 2", "address: 2: 3"),
        "devices/b1.yaml": DEVICES + "    poll_interval: often\n",
    })

    errors = errors_of(site)

    assert errors[0].startswith("profiles/pump.yaml:5:15: YAML syntax: mapping values are not allowed here")
    assert errors[1].startswith("devices/b1.yaml:6:20 devices[0].poll_interval:")
    assert len(errors) == 2  # the broken profile is still known by its file name


def test_a_duplicate_key_is_an_error_naming_the_first_one(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"devices/b1.yaml": DEVICES + "    profile: pump\n"})

    assert errors_of(site) == [
        "devices/b1.yaml:6:5 devices[0].profile: duplicate key 'profile': it is already set on line 3; "
        "YAML would silently keep only the last one, so remove one of them"
    ]


def test_a_missing_site_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_site(tmp_path / "nowhere.yaml")


def test_a_sink_missing_what_its_api_needs_is_located_at_the_sink(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": SITE + (
        "sinks:\n  - type: influxdb\n    name: influx\n    url: http://127.0.0.1:8086\n"
    )})

    assert errors_of(site) == ["site.yaml:5:5 sinks[0]: an InfluxDB v2 sink needs bucket:"]


def test_a_file_that_is_not_a_mapping_says_what_it_should_hold(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"profiles/pump.yaml": "- address: 1\n"})

    assert errors_of(site) == [
        "profiles/pump.yaml:1:1: a profile file holds a mapping (key: value lines), not a list"
    ]


def test_two_sinks_with_one_name_are_refused(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": SITE + (
        "sinks:\n  - {type: history}\n  - {type: history, name: history, retention: 1d}\n"
    )})

    [error] = errors_of(site)
    assert error.startswith("site.yaml:6:27 sinks[1].name: sink name 'history' is already used by "
                            "site.yaml:5:5;")


def test_a_broken_site_yaml_still_lets_profiles_and_devices_be_checked(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "site.yaml": "site:\n  id: x\n name: y\n",
        "devices/b1.yaml": DEVICES.replace("profile: pump", "profile: pomp"),
    })

    errors = errors_of(site)

    assert errors[0].startswith("site.yaml:3:2: YAML syntax:")
    assert errors[1].startswith("devices/b1.yaml:3:14 devices[0].profile: 'pomp' is not a known profile")
