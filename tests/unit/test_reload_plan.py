"""Which devices a reload restarts, which lines it reopens, what waits for a restart:
`plan_reload` on two loaded configurations, the way SIGHUP and `gateway reload` see them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.lines import line_name
from gateway.reload import applied_config, plan_reload

SITE = """\
site: {id: test-site, name: 测试小区}
"""

PUMP = """\
name: booster pump
system: water_supply
points:
  outlet_pressure: {address: 0, type: uint16, scale: 0.001}
  running: {address: 1}
rules:
  - id: low_pressure
    when: outlet_pressure < 0.2
    alarm: {severity: major}
"""

METER = """\
name: power meter
system: power
points:
  kwh: {address: 0, type: uint32}
"""

HVAC = """\
name: air handler
system: hvac
protocol: bacnet
points:
  supply_temp: {object: analog-input:1}
"""

DEVICES = """\
devices:
  - id: pump_1
    profile: pump
    connection: {type: modbus_rtu, port: /dev/ttyUSB0, unit: 1}
  - id: pump_2
    profile: pump
    connection: {type: modbus_rtu, port: /dev/ttyUSB0, unit: 2}
  - id: meter_1
    profile: meter
    connection: {host: 10.0.0.5, unit: 1}
  - id: ahu_1
    profile: hvac
    connection: {type: bacnet_ip, address: 10.0.0.20, device_instance: 1001}
"""


def load(root: Path, **files: str) -> SiteConfig:
    """The site with `files` (relative path with / written as __) replacing the defaults."""
    layout = {"site.yaml": SITE, "profiles/pump.yaml": PUMP, "profiles/meter.yaml": METER,
              "profiles/hvac.yaml": HVAC, "devices/all.yaml": DEVICES}
    layout.update({name.replace("__", "/").replace("_yaml", ".yaml"): text
                   for name, text in files.items()})
    for name, text in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for stale in root.glob("**/*.yaml"):
        if str(stale.relative_to(root)) not in layout:
            stale.unlink()
    return load_site(root / "site.yaml")


def test_the_same_files_restart_nothing_and_leave_nothing_to_do(tmp_path: Path) -> None:
    plan = plan_reload(load(tmp_path), load(tmp_path))
    assert (plan.restarted, plan.stop, plan.start, plan.rebuild) == ([], [], [], [])
    assert plan.live_changed is False and plan.restart_needed == []


def test_a_changed_register_map_restarts_only_the_devices_of_that_profile(tmp_path: Path) -> None:
    old = load(tmp_path)
    new = load(tmp_path, profiles__meter_yaml=METER.replace("address: 0", "address: 100"))
    plan = plan_reload(old, new)
    assert plan.changed == ["meter_1"]
    assert plan.restarted == plan.stop == plan.start == ["meter_1"]
    assert plan.rebuild == [] and plan.live_changed is True


def test_a_new_unit_id_restarts_that_device_and_keeps_the_serial_line(tmp_path: Path) -> None:
    old = load(tmp_path)
    new = load(tmp_path, devices__all_yaml=DEVICES.replace("unit: 2}", "unit: 3}"))
    plan = plan_reload(old, new)
    assert plan.restarted == ["pump_2"]
    assert plan.rebuild == []  # pump_1 keeps talking on the port while pump_2 restarts


def test_a_serial_ports_new_baud_rate_reopens_the_line_and_restarts_every_device_on_it(
    tmp_path: Path,
) -> None:
    old = load(tmp_path)
    new = load(tmp_path, devices__all_yaml=DEVICES.replace(
        "port: /dev/ttyUSB0,", "port: /dev/ttyUSB0, baudrate: 19200,"))
    plan = plan_reload(old, new)
    assert [line_name(key) for key in plan.rebuild] == ["modbus rtu:/dev/ttyUSB0"]
    assert plan.restarted == ["pump_1", "pump_2"]  # the meter and the air handler poll on


def test_the_gateways_bacnet_address_reopens_the_bacnet_line_only(tmp_path: Path) -> None:
    old = load(tmp_path)
    new = load(tmp_path, site_yaml=SITE + "bacnet: {address: '0.0.0.0:47809'}\n")
    plan = plan_reload(old, new)
    assert [line_name(key) for key in plan.rebuild] == ["bacnet"]
    assert plan.restarted == ["ahu_1"] and plan.restart_needed == []


def test_names_locations_assets_and_rules_restart_no_driver(tmp_path: Path) -> None:
    old = load(tmp_path)
    devices = DEVICES.replace(
        "  - id: meter_1\n",
        "  - id: meter_1\n    name: 总电表\n    location: {building: 1号楼, room: 配电室}\n"
        "    asset: {vendor: Acrel, serial: A-42}\n")
    pump = PUMP.replace("outlet_pressure < 0.2", "outlet_pressure < 0.25")
    new = load(tmp_path, devices__all_yaml=devices, profiles__pump_yaml=pump)
    plan = plan_reload(old, new)
    assert plan.changed == ["meter_1", "pump_1", "pump_2"]  # the rules and catalog take them
    assert plan.restarted == [] and plan.live_changed is True


def test_a_device_moved_to_another_file_is_not_a_change(tmp_path: Path) -> None:
    old = load(tmp_path)
    head, _, meter = DEVICES.partition("  - id: meter_1\n")
    rest, _, ahu = meter.partition("  - id: ahu_1\n")
    new = load(tmp_path, devices__all_yaml=head + "  - id: ahu_1\n" + ahu,
               devices__meters_yaml="devices:\n  - id: meter_1\n" + rest)
    assert new.devices[-1].source != old.devices[2].source
    plan = plan_reload(old, new)
    assert plan.changed == [] and plan.restarted == []


def test_added_removed_and_disabled_devices_start_and_stop_alone(tmp_path: Path) -> None:
    old = load(tmp_path)
    devices = (DEVICES.replace("    profile: meter\n", "    profile: meter\n    enabled: false\n")
               .replace("  - id: ahu_1\n", "  - id: ahu_gone\n")
               + "  - id: pump_3\n    profile: pump\n"
                 "    connection: {type: modbus_rtu, port: /dev/ttyUSB0, unit: 3}\n")
    new = load(tmp_path, devices__all_yaml=devices)
    plan = plan_reload(old, new)
    assert plan.added == ["ahu_gone", "pump_3"] and plan.removed == ["ahu_1"]
    assert plan.stop == ["ahu_1", "meter_1"]  # meter_1 disabled, still configured
    assert plan.start == ["ahu_gone", "pump_3"] and plan.restarted == []
    # the meter's TCP endpoint has no device left: it is closed; the BACnet line stays
    assert [line_name(key) for key in plan.unused] == ["modbus tcp:10.0.0.5:502"]


def test_settings_bound_at_start_are_named_and_kept_as_they_run(tmp_path: Path) -> None:
    old = load(tmp_path)
    site = SITE + "outbox: {fsync: normal}\nsinks:\n  - {type: history, name: local}\n"
    new = load(tmp_path, site_yaml=site + "metrics: {listen: 9200}\n")
    plan = plan_reload(old, new)
    assert plan.restart_needed == ["outbox", "sinks"]
    assert plan.live_changed is True  # metrics: applied by the reload
    applied = applied_config(old, new)
    assert (applied.outbox, applied.sinks) == (old.outbox, old.sinks)
    assert applied.metrics is not None and applied.metrics.address == ("127.0.0.1", 9200)


def test_an_mqtt_devices_new_login_moves_it_to_another_client(tmp_path: Path) -> None:
    profile = """\
        name: call button
        system: emergency
        protocol: mqtt
        points:
          pressed: {topic: state, path: $.pressed, type: bool}
        """
    devices = DEVICES + """\
  - id: button_1
    profile: button
    connection: {type: mqtt, host: 127.0.0.1, base_topic: call/1, username: edge}
"""
    old = load(tmp_path, profiles__button_yaml=profile, devices__all_yaml=devices)
    new = load(tmp_path, profiles__button_yaml=profile,
               devices__all_yaml=devices.replace("username: edge", "username: edge2"))
    plan = plan_reload(old, new)
    assert plan.restarted == ["button_1"]
    assert [line_name(key) for key in plan.unused] == ["mqtt 127.0.0.1:1883"]  # the old login's
    summary = plan.summary(devices=5)
    assert summary["restarted"] == ["button_1"] and summary["lines_rebuilt"] == []
