"""The catalog holds one set of units, names and enums per profile, not one per device; a
device whose rules derive points gets its own, with them added."""

from __future__ import annotations

from config_site_files import write_site

from gateway.catalog import Catalog
from gateway.config.loader import load_site

METER = """\
name: meter
system: power
points:
  power: {address: 0, unit: kW, name: 功率}
  state: {address: 1, enum: {0: 停, 1: 运行}}
"""

DEVICES = """\
devices:
  - id: m1
    profile: meter
    connection: {host: 127.0.0.1}
  - id: m2
    profile: meter
    connection: {host: 127.0.0.2}
  - id: m3
    profile: meter
    connection: {host: 127.0.0.3}
"""

PAIR = """\
rules:
  - id: pair_power
    name: 两表功率
    device: m1
    derive: m1.power + m2.power
    unit: kW
"""


def catalog(tmp_path) -> Catalog:
    site = write_site(tmp_path, {
        "profiles/meter.yaml": METER, "profiles/pump.yaml": None, "devices/b1.yaml": DEVICES,
        "rules/pair.yaml": PAIR,
        "site.yaml": "site: {id: test-site, name: Test site}\n"
                     "include: {profiles: [profiles/*.yaml], devices: [devices/*.yaml], rules: [rules/*.yaml]}\n",
    })
    return Catalog.from_config(load_site(site))


def test_devices_of_one_profile_share_its_units_names_and_enums(tmp_path):
    info = catalog(tmp_path)
    m2, m3 = info.device("m2"), info.device("m3")

    assert m2.units == {"power": "kW"} and m2.point_names == {"power": "功率"}
    assert m2.enums == {"state": {0: "停", 1: "运行"}}
    assert m3.units is m2.units and m3.point_names is m2.point_names and m3.enums is m2.enums


def test_a_device_deriving_a_point_has_it_and_its_neighbours_do_not(tmp_path):
    info = catalog(tmp_path)
    m1, m2 = info.device("m1"), info.device("m2")

    assert m1.units == {"power": "kW", "pair_power": "kW"}
    assert m1.point_names == {"power": "功率", "pair_power": "两表功率"}
    assert "pair_power" not in m2.units and "pair_power" not in m2.point_names
