"""The monthly ledger (台账) from a month of known readings, checked cell by cell.

October 2026 in Shanghai, polled every 15 minutes through the real energy stage:

- water_main, the building's main: 0.8 m³/h from 5000 m³;
- water_101 (household 1-1-101): 0.5 m³/h from 100 m³, its meter swapped on 20 October
  at 10:07:30 (the new one starts at 0) and read at handover on 5 October at 10:00;
- water_102: 0.25 m³/h from 200 m³, silent from 10 October 00:00 to 06:00 (those six
  hours are estimated: 1.5 m³ of its 186);
- power_main: 10 kWh/h from 1000 kWh, reset to 0 on 15 October at 12:00 (the quarter
  hour before the reset is dropped, flagged, not guessed);
- power_light, a uint16 kWh counter: 1 kWh/h from 65000, wrapping at 65536;
- water_201, read by hand on 1 October 09:00 (50), 31 October 18:00 (58), and 2 November
  09:00 (59): the month starts at its first reading, closes interpolated.

The group b1_water compares the main (595.2 m³) with its sub-meters (558 m³): 37.2 m³
lost, 6.25 % (6.3 % in the ledger: rounded half up).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.batch import Batch
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.energy.ledger import Ledger, build_ledger, month_bounds, write_csv, write_xlsx
from gateway.energy.reader import EnergyReader
from gateway.energy.stage import EnergyStage

SHANGHAI = ZoneInfo("Asia/Shanghai")
STEP = 15 * 60.0
HOUR = 3600.0


def at(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(2026, month, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


OCT, NOV = at(10, 1), at(11, 1)
SWAP = at(10, 20, 10, 7, 30)
RESET = at(10, 15, 12)
GAP = (at(10, 10), at(10, 10, 6))
HANDOVER = at(10, 5, 10)

PROFILES = {
    "water": {"name": "水表", "system": "water_supply", "points": {
        "total_volume": {"table": "input", "address": 0, "type": "uint32", "scale": 0.01,
                         "unit": "m³", "counter": True}}},
    "power": {"name": "三相电表", "system": "power", "points": {
        "energy_import": {"address": 0, "type": "float32", "unit": "kWh", "counter": True}}},
    "pulse": {"name": "脉冲电表", "system": "power", "points": {
        "kwh": {"address": 0, "type": "uint16", "unit": "kWh", "counter": True}}},
}
DEVICES = [
    {"id": "water_main", "name": "1号楼总水表", "profile": "water"},
    {"id": "water_101", "name": "1-1-101 水表", "profile": "water",
     "meter": {"household": "1-1-101"}},
    {"id": "water_102", "name": "1-1-102 水表", "profile": "water",
     "meter": {"household": "1-1-102"}},
    {"id": "power_main", "name": "1号楼总电表", "profile": "power"},
    {"id": "power_light", "name": "公共照明", "profile": "pulse"},
]
ENERGY = {
    "groups": [
        {"id": "b1_water", "name": "1号楼用水", "commodity": "water", "master": "water_main",
         "members": ["water_101", "water_102"]},
        {"id": "b1_power", "name": "1号楼用电", "commodity": "electricity",
         "master": "power_main", "members": ["power_light"], "loss_alarm": False},
    ],
    "manual_meters": [
        {"id": "water_201", "name": "2-1-201 户水表", "commodity": "water", "unit": "m³",
         "household": "2-1-201"},
    ],
}


def write_site(root: Path) -> Path:
    (root / "profiles").mkdir(parents=True)
    (root / "devices").mkdir()
    for name, profile in PROFILES.items():
        (root / "profiles" / f"{name}.yaml").write_text(yaml.safe_dump(profile, allow_unicode=True),
                                                        encoding="utf-8")
    devices = [{**d, "connection": {"host": "127.0.0.1"}} for d in DEVICES]
    (root / "devices" / "b1.yaml").write_text(yaml.safe_dump({"devices": devices}, allow_unicode=True),
                                              encoding="utf-8")
    site = {"site": {"id": "demo", "name": "阳光花园", "timezone": "Asia/Shanghai"},
            "data_dir": "data", "energy": ENERGY}
    (root / "site.yaml").write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")
    return root / "site.yaml"


def readings(t: float) -> dict[str, dict[str, float]]:
    """What each networked meter reads at `t` (None: silent)."""
    hours = (t - OCT) / HOUR
    out: dict[str, dict[str, float]] = {
        "water_main": {"total_volume": 5000 + 0.8 * hours},
        "water_101": {"total_volume": 100 + 0.5 * hours if t < SWAP else 0.5 * (t - SWAP) / HOUR},
        "power_main": {"energy_import": 1000 + 10 * hours if t < RESET else 10 * (t - RESET) / HOUR},
        "power_light": {"kwh": (65000 + hours) % 65536},
    }
    if not GAP[0] < t < GAP[1]:
        out["water_102"] = {"total_volume": 200 + 0.25 * hours}
    return out


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteConfig, Path]:
    """A month through the energy stage: polls, a swap, a handover, manual readings."""
    root = tmp_path_factory.mktemp("ledger")
    config = load_site(write_site(root))
    clock = {"now": OCT}
    stage = EnergyStage(config, config.data_dir, clock=lambda: clock["now"])
    stage.open()
    entries = {
        at(10, 1, 9): lambda: stage.manual_reading("water_201", 50.0, "抄表员 陈"),
        HANDOVER: lambda: stage.snapshot("1-1-101", "客服 李"),
        SWAP: lambda: stage.replace_meter("water_101", 100 + 0.5 * (SWAP - OCT) / HOUR, 0.0, "水工 王"),
        at(10, 31, 18): lambda: stage.manual_reading("water_201", 58.0, "抄表员 陈"),
    }
    t = OCT
    while t <= NOV + STEP:
        clock["now"] = t
        for device, values in readings(t).items():
            stage.process(Batch(device, t, tuple(values), list(values.values())))
        for when in sorted(w for w in entries if t <= w < t + STEP):  # after the polls at t
            clock["now"] = when
            entries.pop(when)()
        stage.tick(clock["now"] + 1)
        t += STEP
    clock["now"] = at(11, 2, 9)
    stage.manual_reading("water_201", 59.0, "抄表员 陈")
    stage.tick(clock["now"] + 60)
    stage.close()
    return config, config.data_dir / "energy.db"


def ledger_of(month: tuple[SiteConfig, Path], **kwargs: Any) -> Ledger:
    config, path = month
    with EnergyReader(path) as reader:
        return build_ledger(config, reader, "2026-10", **kwargs)


def csv_rows(ledger: Ledger, lang: str = "en") -> list[list[str]]:
    out = io.StringIO()
    write_csv(ledger, out, lang)
    return list(csv.reader(io.StringIO(out.getvalue())))


def table(rows: list[list[str]], title: str) -> list[list[str]]:
    """The rows of one table of the CSV: after its title and headers, to the empty line."""
    start = rows.index([title]) + 2
    end = next((i for i in range(start, len(rows)) if rows[i] == []), len(rows))
    return rows[start:end]


def test_the_month_is_the_local_month() -> None:
    assert month_bounds("2026-10", "Asia/Shanghai") == (OCT, NOV)
    with pytest.raises(ValueError, match="write it as 2026-10"):
        month_bounds("October", "Asia/Shanghai")


def test_every_meter_line_cell_by_cell(month) -> None:
    rows = csv_rows(ledger_of(month))

    assert rows[0] == ["ledger", "阳光花园", "2026-10", "Asia/Shanghai"]
    assert rows[2:4] == [["meters"], [
        "meter", "counter", "name", "household", "commodity", "unit", "opening reading",
        "closing reading", "consumption", "estimated share", "flags", "handover"]]
    assert table(rows, "meters") == [
        ["water_main", "total_volume", "1号楼总水表", "", "water", "m³",
         "5000.000", "5595.200", "595.200", "0.0%", "", ""],
        ["water_101", "total_volume", "1-1-101 水表", "1-1-101", "water", "m³",
         "100.000", "138.938", "372.000", "0.0%", "replaced 1",
         "1-1-101 2026-10-05 10:00 153.000 (客服 李)"],
        ["water_102", "total_volume", "1-1-102 水表", "1-1-102", "water", "m³",
         "200.000", "386.000", "186.000", "0.8%", "", ""],
        ["power_main", "energy_import", "1号楼总电表", "", "electricity", "kWh",
         "1000.000", "3960.000", "7437.500", "0.0%", "reset 1", ""],
        ["power_light", "kwh", "公共照明", "", "electricity", "kWh",
         "65000.000", "208.000", "744.000", "0.0%", "rollover 1", ""],
        ["water_201", "reading", "2-1-201 户水表", "2-1-201", "water", "m³",
         "50.000", "58.154", "8.154", "100.0%", "manual 2", ""],
    ]


def test_every_group_line_cell_by_cell(month) -> None:
    rows = csv_rows(ledger_of(month))

    assert rows[rows.index(["groups"]) + 1] == [
        "group", "name", "commodity", "kind", "master meter", "master total", "sub-meter sum",
        "loss", "loss rate", "estimated", "notes"]
    assert table(rows, "groups") == [
        ["b1_water", "1号楼用水", "water", "building", "water_main.total_volume",
         "595.200", "558.000", "37.200", "6.3%", "", ""],
        ["b1_power", "1号楼用电", "electricity", "building", "power_main.energy_import",
         "7437.500", "744.000", "6693.500", "90.0%", "", ""],
    ]


def test_the_handover_snapshot_is_in_the_ledger(month) -> None:
    rows = csv_rows(ledger_of(month))

    assert table(rows, "handover") == [
        ["1-1-101", "2026-10-05 10:00", "客服 李", "water_101", "total_volume", "153.000", "m³",
         "2026-10-05 10:00"],
    ]


def test_the_consumption_is_the_closing_total_less_the_opening_total(month) -> None:
    _config, path = month
    with EnergyReader(path) as reader:
        days = reader.rollups("day", OCT, NOV, device="water_101")
        [month_row] = reader.rollups("month", OCT, NOV, device="water_101")

    assert len(days) == 31
    assert sum(d.consumption for d in days) == pytest.approx(372.0)
    assert month_row.closing_total - month_row.opening_total == pytest.approx(372.0)


def test_headers_and_words_in_chinese(month) -> None:
    rows = csv_rows(ledger_of(month), "zh")

    assert rows[0][0] == "台账"
    assert rows[rows.index(["分表"]) + 1] == [
        "表号", "计量点", "名称", "户号", "类别", "单位", "期初读数", "期末读数", "用量",
        "估算占比", "标记", "交房读数"]
    assert rows[rows.index(["分组"]) + 1][5:9] == ["总表用量", "分表合计", "损耗", "损耗率"]
    assert rows[rows.index(["交房抄表"]) + 1][:3] == ["户号", "时间", "登记人"]
    meters = {r[0]: r for r in table(rows, "分表")}
    assert meters["water_101"][4] == "水" and meters["water_101"][10] == "换表 1"
    assert meters["water_201"][10] == "手工抄表 2"
    assert meters["power_light"][10] == "翻转 1" and meters["power_main"][10] == "清零 1"
    assert table(rows, "分组")[0][3] == "楼栋"


def test_a_groups_ledger_has_its_meters_only(month) -> None:
    rows = csv_rows(ledger_of(month, group="b1_water"))

    assert [r[0] for r in table(rows, "meters")] == ["water_main", "water_101", "water_102"]
    assert [r[0] for r in table(rows, "groups")] == ["b1_water"]
    assert len(table(rows, "handover")) == 1


def test_an_unknown_group_is_refused_with_a_suggestion(month) -> None:
    with pytest.raises(ValueError, match="no group 'b1_watr'; did you mean b1_water?"):
        ledger_of(month, group="b1_watr")


def test_a_month_not_yet_closed_is_built_from_its_days_and_says_so(month) -> None:
    config, path = month
    with EnergyReader(path) as reader:
        rows = csv_rows(build_ledger(config, reader, "2026-11"))

    meters = {r[0]: r for r in table(rows, "meters")}
    assert meters["water_main"][8] == "" and meters["water_main"][10] == "no readings"
    assert meters["water_201"][10] == "manual 1; month not closed: up to 2026-11-01"


def test_the_xlsx_holds_the_same_numbers_as_numbers(month, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    path = tmp_path / "ledger.xlsx"
    write_xlsx(ledger_of(month), path, "zh")
    book = load_workbook(path)

    assert book.sheetnames == ["台账", "分表", "分组", "交房抄表"]
    sheet = book["分表"]
    assert [c.value for c in sheet[1]][:3] == ["表号", "计量点", "名称"]
    water_102 = [c.value for c in sheet[4]]
    assert water_102[0] == "water_102" and water_102[8] == pytest.approx(186.0)
    assert water_102[9] == pytest.approx(1.5 / 186.0)
    assert sheet.cell(row=4, column=10).number_format == "0.0%"
    group = [c.value for c in book["分组"][2]]
    assert group[:2] == ["b1_water", "1号楼用水"] and group[8] == pytest.approx(0.0625)


# --- gateway ledger ----------------------------------------------------------------------------


def test_the_ledger_command_prints_the_csv_without_a_daemon(month, capsys) -> None:
    from gateway.cli import main

    config, _path = month
    assert main(["ledger", "-c", str(config.source), "--month", "2026-10"]) == 0

    printed = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert printed == csv_rows(ledger_of(month))


def test_the_ledger_command_writes_a_csv_excel_reads_and_an_xlsx(month, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    from gateway.cli import main

    config, _path = month
    out = tmp_path / "ledger.csv"
    assert main(["ledger", "-c", str(config.source), "--month", "2026-10", "--lang", "zh",
                 "--group", "b1_water", "-o", str(out)]) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    assert list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))[0][0] == "台账"

    book = tmp_path / "ledger.xlsx"
    assert main(["ledger", "-c", str(config.source), "--month", "2026-10", "--format", "xlsx",
                 "-o", str(book)]) == 0
    assert load_workbook(book).sheetnames == ["ledger", "meters", "groups", "handover"]


def test_the_ledger_command_refuses_an_unknown_group_and_a_missing_store(month, tmp_path: Path,
                                                                          capsys) -> None:
    from gateway.cli import main

    config, _path = month
    assert main(["ledger", "-c", str(config.source), "--month", "2026-10", "--group", "b2"]) == 1
    assert "no group 'b2'" in capsys.readouterr().err
    assert main(["ledger", "-c", str(config.source), "--month", "2026-10",
                 "--data-dir", str(tmp_path)]) == 2
    assert "no energy data at" in capsys.readouterr().err
