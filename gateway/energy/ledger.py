"""The monthly ledger (台账): per meter and per group, one local month, from energy.db.

Managers reconcile the month's water and power bills against it and look for losses
(跑冒滴漏) and theft (盗水盗电), so every number in it is one the energy stage stored,
never recomputed from raw polls here:

- per meter (each counter of a device; a manual meter): the opening and closing
  readings (the counter at the month's local start and end, interpolated by the
  stage), the consumption (closing total − opening total, which also spans a
  rollover, a reset or a meter swap correctly), the share of it that was estimated
  across gaps, flags (resets, jumps, replacements, manual readings, rollovers) and the
  handover snapshots taken in the month;
- per group: the master's total, the sub-meters' sum, the loss and its rate;
- the handover snapshots themselves (move-in readings of a household).

A month the stage has not closed yet (the current one, or a meter silent since) is
built from its closed days and says so in the flags. `build_ledger` gathers; the
writers turn a `Ledger` into CSV (UTF-8; with a BOM when it goes to a file, so Excel
opens the Chinese headers) or an xlsx workbook with one sheet per table. Headers come
in English or Chinese (`lang`).
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from gateway.config.energy_loader import SiteMeter, group_meters, site_meters
from gateway.energy.reader import EnergyReader, Rollup, Snapshot

# The order flags are shown in, and their names in both languages.
FLAGS = ("reset", "jump", "replaced", "manual", "rollover")
_FLAG_NAMES = {
    "en": {"reset": "reset", "jump": "jump", "replaced": "replaced", "manual": "manual",
           "rollover": "rollover"},
    "zh": {"reset": "清零", "jump": "跳变", "replaced": "换表", "manual": "手工抄表",
           "rollover": "翻转"},
}
METER_COLUMNS = ("meter", "counter", "name", "household", "commodity", "unit", "opening",
                 "closing", "consumption", "estimated_share", "flags", "handover")
GROUP_COLUMNS = ("group", "name", "commodity", "kind", "master", "master_total",
                 "members_total", "loss", "loss_rate", "estimated", "notes")
HANDOVER_COLUMNS = ("household", "time", "by", "meter", "counter", "reading", "unit", "read_at")
HEADERS: dict[str, dict[str, str]] = {
    "en": {
        "meter": "meter", "counter": "counter", "name": "name", "household": "household",
        "commodity": "commodity", "unit": "unit", "opening": "opening reading",
        "closing": "closing reading", "consumption": "consumption",
        "estimated_share": "estimated share", "flags": "flags", "handover": "handover",
        "group": "group", "kind": "kind", "master": "master meter",
        "master_total": "master total", "members_total": "sub-meter sum", "loss": "loss",
        "loss_rate": "loss rate", "estimated": "estimated", "notes": "notes",
        "time": "time", "by": "by", "reading": "reading", "read_at": "read at",
    },
    "zh": {
        "meter": "表号", "counter": "计量点", "name": "名称", "household": "户号",
        "commodity": "类别", "unit": "单位", "opening": "期初读数", "closing": "期末读数",
        "consumption": "用量", "estimated_share": "估算占比", "flags": "标记",
        "handover": "交房读数", "group": "分组", "kind": "类型", "master": "总表",
        "master_total": "总表用量", "members_total": "分表合计", "loss": "损耗",
        "loss_rate": "损耗率", "estimated": "估算", "notes": "备注",
        "time": "时间", "by": "登记人", "reading": "读数", "read_at": "读数时间",
    },
}
TITLES = {
    "en": {"ledger": "ledger", "meters": "meters", "groups": "groups", "handover": "handover"},
    "zh": {"ledger": "台账", "meters": "分表", "groups": "分组", "handover": "交房抄表"},
}
_WORDS = {
    "en": {"electricity": "electricity", "water": "water", "gas": "gas", "heat": "heat",
           "building": "building", "tenant": "tenant", "common_area": "common area",
           "other": "other", "yes": "yes", "open": "month not closed: up to {day}",
           "no_data": "no readings", "missing": "missing: {meters}", "gone": "not in the configuration"},
    "zh": {"electricity": "电", "water": "水", "gas": "燃气", "heat": "热",
           "building": "楼栋", "tenant": "租户", "common_area": "公共区域", "other": "其他",
           "yes": "是", "open": "月未结, 截至 {day}", "no_data": "无读数",
           "missing": "缺: {meters}", "gone": "已不在配置中"},
}
LANGUAGES = tuple(HEADERS)
DECIMALS = 3


@dataclass(slots=True)
class MeterLine:
    """One counter's month."""

    meter: str
    counter: str
    name: str | None
    household: str | None
    commodity: str | None
    unit: str | None
    opening: float | None = None
    closing: float | None = None
    consumption: float | None = None
    estimated_share: float | None = None
    flags: dict[str, int] = field(default_factory=dict)
    handover: list[Snapshot] = field(default_factory=list)
    open_until: str | None = None  # the month is not closed: the last closed day
    configured: bool = True


@dataclass(slots=True)
class GroupLine:
    """One group's month: the master against the sum of its sub-meters."""

    group: str
    name: str | None
    commodity: str
    kind: str
    master: str | None
    master_total: float | None = None
    members_total: float | None = None
    loss: float | None = None
    loss_rate: float | None = None
    estimated: bool = False
    missing: list[str] = field(default_factory=list)
    open_until: str | None = None


@dataclass(slots=True)
class Ledger:
    site: str
    month: str  # 2026-10
    timezone: str
    start: float
    end: float
    meters: list[MeterLine]
    groups: list[GroupLine]
    handovers: list[Snapshot]


def month_bounds(month: str, timezone: str) -> tuple[float, float]:
    """The local month `2026-10` as [start, end) epoch seconds; ValueError if not a month."""
    try:
        first = datetime.strptime(month, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"{month!r} is not a month; write it as 2026-10") from None
    zone = ZoneInfo(timezone)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    start = datetime(first.year, first.month, 1, tzinfo=zone).timestamp()
    return start, datetime(following.year, following.month, 1, tzinfo=zone).timestamp()


def build_ledger(config: Any, reader: EnergyReader, month: str, *,
                 group: str | None = None) -> Ledger:
    """The ledger of `month` for the whole site, or for one group's meters and itself.

    ValueError when the month is not one or the group is unknown (with a suggestion).
    """
    zone = config.site.timezone
    start, end = month_bounds(month, zone)
    meters = site_meters(config)
    groups = list(config.energy.groups)
    if group is not None:
        chosen = next((g for g in groups if g.id == group), None)
        if chosen is None:
            ids = [g.id for g in groups]
            close = difflib.get_close_matches(group, ids, n=1)
            hint = f"; did you mean {close[0]}?" if close else (
                f"; groups: {', '.join(ids)}" if ids else "; the site has no groups")
            raise ValueError(f"no group {group!r}{hint}")
        master, members = group_meters(chosen, meters)
        keep = {m.key for m in ([master] if master else []) + members}
        meters = [m for m in meters if m.key in keep]
        groups = [chosen]
    gatherer = _Month(reader, start, end, zone)
    lines = [gatherer.meter(m) for m in meters]
    if group is None:  # counters in the file the configuration no longer has
        known = {m.key for m in meters}
        for device, point in gatherer.stored_counters():
            if f"{device}.{point}" not in known:
                line = gatherer.meter(SiteMeter(device, point, "", None, None, None, False,
                                                False, None, None, None))
                line.commodity, line.configured = None, False
                lines.append(line)
    group_lines = [gatherer.group(g, meters) for g in groups]
    handovers = [s for s in reader.snapshots(month)
                 if group is None or f"{s.device}.{s.point}" in {m.key for m in meters}]
    return Ledger(config.site.name, month, zone, start, end, lines, group_lines, handovers)


class _Month:
    """Reads one month of the store."""

    def __init__(self, reader: EnergyReader, start: float, end: float, zone: str) -> None:
        self.reader = reader
        self.start, self.end = start, end
        self.zone = ZoneInfo(zone)
        self.months = {(r.device, r.point): r for r in reader.rollups("month", start, end)}
        self.days: dict[tuple[str, str], list[Rollup]] = {}
        for r in reader.rollups("day", start, end):
            self.days.setdefault((r.device, r.point), []).append(r)
        self.hours: dict[tuple[str, str], list[Rollup]] = {}
        for r in reader.rollups("hour", start, end):
            self.hours.setdefault((r.device, r.point), []).append(r)
        self.events = reader.events(start, end)
        self.replacements = reader.replacements(start, end)
        self.readings = [r for r in reader.readings_between(start, end)
                         if r.source == "manual" or "rollover" in r.flags]
        self.snapshots = reader.snapshots(datetime.fromtimestamp(start, self.zone).strftime("%Y-%m"))

    def stored_counters(self) -> list[tuple[str, str]]:
        return sorted({*self.months, *self.days})

    def day(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d")

    def meter(self, m: SiteMeter) -> MeterLine:
        key = (m.device, m.point)
        line = MeterLine(m.device, m.point, m.name, m.household, m.commodity or None, m.unit)
        month, days = self.months.get(key), self.days.get(key, [])
        if month is not None:
            line.opening, line.closing = month.opening_raw, month.closing_raw
            line.consumption = month.consumption
        elif days:
            line.opening, line.closing = days[0].opening_raw, days[-1].closing_raw
            line.consumption = sum(d.consumption for d in days)
            line.open_until = self.day(days[-1].end - 1)
        if line.consumption is not None:
            line.estimated_share = self._estimated_share(key, line.consumption, month, days)
        line.flags = self._flags(m.device, m.point)
        line.handover = [s for s in self.snapshots if (s.device, s.point) == key]
        return line

    def _estimated_share(self, key: tuple[str, str], consumption: float,
                         month: Rollup | None, days: list[Rollup]) -> float:
        """The fraction of the month's consumption in periods the stage estimated: by
        hour (the finest it keeps), else by day, else the month's own flag."""
        hours = self.hours.get(key, [])
        finest: Sequence[Rollup] = hours or days
        if not finest:
            return 1.0 if month is not None and month.estimated and consumption else 0.0
        total = sum(p.consumption for p in finest)
        estimated = sum(p.consumption for p in finest if p.estimated)
        if total <= 0:
            return 1.0 if any(p.estimated for p in finest) and consumption else 0.0
        return min(1.0, max(0.0, estimated / total))

    def _flags(self, device: str, point: str) -> dict[str, int]:
        counts = dict.fromkeys(FLAGS, 0)
        for event in self.events:
            if event.device == device and event.point == point and event.kind in ("reset", "jump"):
                counts[event.kind] += 1
        counts["replaced"] = sum(1 for r in self.replacements if (r.device, r.point) == (device, point))
        for reading in self.readings:
            if (reading.device, reading.point) != (device, point):
                continue
            counts["manual"] += reading.source == "manual"
            counts["rollover"] += "rollover" in reading.flags
        return {k: v for k, v in counts.items() if v}

    def group(self, g: Any, meters: list[SiteMeter]) -> GroupLine:
        master, _members = group_meters(g, meters) if meters else (None, [])
        line = GroupLine(g.id, g.name, g.commodity, g.kind,
                         master.key if master else g.master)
        rows = self.reader.group_rollups("month", self.start, self.end, group=g.id)
        if rows:
            row = rows[0]
            line.master_total = row.consumption if g.master is not None else None
            line.members_total = row.members if g.master is not None else row.consumption
            line.loss, line.loss_rate = row.loss, row.loss_rate
            line.estimated, line.missing = row.estimated, list(row.missing)
            return line
        days = self.reader.group_rollups("day", self.start, self.end, group=g.id)
        if not days:
            return line
        line.open_until = self.day(days[-1].end - 1)
        line.estimated = any(d.estimated for d in days)
        line.missing = sorted({m for d in days for m in d.missing})
        consumption = _sum(d.consumption for d in days)
        if g.master is None:
            line.members_total = consumption
            return line
        line.master_total = consumption
        line.members_total = _sum(d.members for d in days)
        line.loss = _sum(d.loss for d in days)
        if line.loss is not None and line.master_total:
            line.loss_rate = line.loss / line.master_total
        return line


def _sum(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any part is unknown: a total with a gap is not a total."""
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


# --- cells ---------------------------------------------------------------------------------


class Cells:
    """A ledger as rows of cells in one language: numbers stay numbers (xlsx formats them),
    `text()` renders them for CSV."""

    def __init__(self, ledger: Ledger, lang: str = "en") -> None:
        if lang not in HEADERS:
            raise ValueError(f"language {lang!r}: one of {', '.join(LANGUAGES)}")
        self.ledger = ledger
        self.lang = lang
        self.words = _WORDS[lang]
        self.zone = ZoneInfo(ledger.timezone)

    def headers(self, columns: Sequence[str]) -> list[str]:
        return [HEADERS[self.lang][c] for c in columns]

    def title(self) -> list[Any]:
        return [TITLES[self.lang]["ledger"], self.ledger.site, self.ledger.month, self.ledger.timezone]

    def local(self, ts: float | None, minutes: bool = True) -> str:
        if ts is None:
            return ""
        return datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M" if minutes else "%Y-%m-%d")

    def word(self, key: str | None) -> str:
        return "" if key is None else self.words.get(key, key)

    def meter_row(self, line: MeterLine) -> list[Any]:
        names = _FLAG_NAMES[self.lang]
        flags = [f"{names[k]} {line.flags[k]}" for k in FLAGS if line.flags.get(k)]
        if line.consumption is None:
            flags.append(self.words["no_data"])
        if line.open_until is not None:
            flags.append(self.words["open"].format(day=line.open_until))
        if not line.configured:
            flags.append(self.words["gone"])
        handover = [f"{s.household} {self.local(s.ts)} {_number(s.reading)}"
                    + (f" ({s.by})" if s.by else "") for s in line.handover]
        return [line.meter, line.counter, line.name or "", line.household or "",
                self.word(line.commodity), line.unit or "", line.opening, line.closing,
                line.consumption, line.estimated_share, "; ".join(flags), "; ".join(handover)]

    def group_row(self, line: GroupLine) -> list[Any]:
        notes = []
        if line.missing:
            notes.append(self.words["missing"].format(meters=", ".join(line.missing)))
        if line.open_until is not None:
            notes.append(self.words["open"].format(day=line.open_until))
        if line.master_total is None and line.members_total is None:
            notes.append(self.words["no_data"])
        return [line.group, line.name or "", self.word(line.commodity), self.word(line.kind),
                line.master or "", line.master_total, line.members_total, line.loss,
                line.loss_rate, self.words["yes"] if line.estimated else "", "; ".join(notes)]

    def handover_row(self, s: Snapshot) -> list[Any]:
        return [s.household, self.local(s.ts), s.by or "", s.device, s.point, s.reading,
                s.unit or "", self.local(s.reading_ts)]

    def tables(self) -> list[tuple[str, list[str], list[list[Any]], tuple[str, ...]]]:
        """(title, headers, rows, columns) of each table, in order."""
        t = TITLES[self.lang]
        return [
            (t["meters"], self.headers(METER_COLUMNS),
             [self.meter_row(m) for m in self.ledger.meters], METER_COLUMNS),
            (t["groups"], self.headers(GROUP_COLUMNS),
             [self.group_row(g) for g in self.ledger.groups], GROUP_COLUMNS),
            (t["handover"], self.headers(HANDOVER_COLUMNS),
             [self.handover_row(s) for s in self.ledger.handovers], HANDOVER_COLUMNS),
        ]


_PERCENT = {"estimated_share", "loss_rate"}
_READINGS = {"opening", "closing", "consumption", "master_total", "members_total", "loss",
             "reading"}


def _rounded(value: float, places: int) -> str:
    """Half up, as a ledger is checked by hand (6.25 % is 6.3 %, not the float's 6.2 %)."""
    quantum = Decimal(1).scaleb(-places)
    return str(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def _number(value: float | None) -> str:
    return "" if value is None else _rounded(value, DECIMALS)


def _text(column: str, value: Any) -> str:
    """A cell as CSV shows it: readings to DECIMALS places, rates as percentages."""
    if value is None:
        return ""
    if column in _PERCENT and isinstance(value, int | float):
        return f"{_rounded(value * 100, 1)}%"
    if column in _READINGS and isinstance(value, int | float):
        return _number(value)
    return str(value)


def write_csv(ledger: Ledger, out: IO[str], lang: str = "en") -> None:
    """The ledger as CSV: a title line, then each table (a title line, its headers, its
    rows) after an empty line."""
    cells = Cells(ledger, lang)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cells.title())
    for title, headers, rows, columns in cells.tables():
        writer.writerow([])
        writer.writerow([title])
        writer.writerow(headers)
        for row in rows:
            writer.writerow([_text(c, v) for c, v in zip(columns, row, strict=True)])


def write_xlsx(ledger: Ledger, path: str | Path, lang: str = "en") -> None:
    """The ledger as an xlsx workbook: one sheet per table, numbers as numbers (readings
    to three places, rates as percentages), headers bold and frozen."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    cells = Cells(ledger, lang)
    book = Workbook()
    book.remove(book.active)
    for title, headers, rows, columns in cells.tables():
        sheet = book.create_sheet(title)
        sheet.append(headers)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "A2"
        for row in rows:
            sheet.append(row)
        for index, column in enumerate(columns, start=1):
            letter = sheet.cell(row=1, column=index).column_letter
            fmt = "0.0%" if column in _PERCENT else ("0.000" if column in _READINGS else None)
            if fmt is not None:
                for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = fmt
            width = max([len(str(headers[index - 1]))] + [len(_text(column, r[index - 1])) for r in rows])
            sheet.column_dimensions[letter].width = min(60, max(8, width + 2))
    info = book.create_sheet(TITLES[lang]["ledger"], 0)
    info.append(cells.title())
    book.save(path)
