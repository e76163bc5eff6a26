"""The report as an xlsx workbook: a summary sheet with the key figures, one sheet per
table with every row (the page shortens long lists), numbers kept as numbers (rates as
percentages, hours to two places), headers bold and frozen, and native Excel charts of
the days (availability, intact rates, alarms by severity) on a `daily` sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.equipment.document import Document, Table
from gateway.equipment.report import SEVERITIES, Report

_FORMATS = {"pct": "0.00%", "hours": "0.00", "minutes": "0.0", "number": "0.000", "int": "0",
            "time": "yyyy-mm-dd hh:mm"}
_SHEET_MAX = 31  # Excel's limit on a sheet name


def write_xlsx(doc: Document, report: Report, path: str | Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    summary = book.active
    summary.title = _name(doc.title)
    summary.append([doc.title])
    summary["A1"].font = Font(bold=True, size=14)
    summary.append([doc.subtitle])
    for line in doc.meta:
        summary.append([line])
    summary.append([])
    for card in doc.cards:
        summary.append([card.label, card.value, card.note])
    summary.append([])
    for line in doc.sources:
        summary.append([line])
    summary.column_dimensions["A"].width = 34
    summary.column_dimensions["B"].width = 14
    summary.column_dimensions["C"].width = 40
    used = {summary.title}
    _daily(book, doc, report, used)
    for section in doc.sections:
        for table in section.tables:
            _sheet(book, table, doc, used)
    book.save(path)


def _name(text: str, used: set[str] | None = None) -> str:
    name = "".join("_" if c in "[]:*?/\\" else c for c in text)[:_SHEET_MAX]
    n = 2
    while used is not None and name in used:
        suffix = f" {n}"
        name = name[:_SHEET_MAX - len(suffix)] + suffix
        n += 1
    return name


def _sheet(book: Any, table: Table, doc: Document, used: set[str]) -> None:
    from openpyxl.styles import Font

    sheet = book.create_sheet(_name(table.title, used))
    used.add(sheet.title)
    sheet.append(table.headers)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    zone = doc.words.zone
    for row in table.rows:
        sheet.append([_value(kind, v, zone) for (_, kind), v in zip(table.columns, row, strict=True)])
    if not table.rows and table.empty:
        sheet.append([table.empty])
    for index, (_, kind) in enumerate(table.columns, start=1):
        letter = sheet.cell(row=1, column=index).column_letter
        fmt = _FORMATS.get(kind)
        if fmt is not None:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                cell.number_format = fmt
        width = max([len(str(table.headers[index - 1]))]
                    + [len(doc.words.text(kind, r[index - 1])) for r in table.rows[:200]])
        sheet.column_dimensions[letter].width = min(60, max(8, width + 2))


def _value(kind: str, value: Any, zone: Any) -> Any:
    """Times as Excel dates (local, without a zone: Excel has none), the rest as is."""
    if kind == "time" and isinstance(value, int | float):
        from datetime import datetime

        return datetime.fromtimestamp(value, zone).replace(tzinfo=None)
    return value


def _daily(book: Any, doc: Document, report: Report, used: set[str]) -> None:
    """One row per day: site availability, each group's intact rate, alarms by severity;
    with the charts drawn from these cells."""
    from openpyxl.chart import BarChart, LineChart, Reference
    from openpyxl.styles import Font

    w = doc.words
    groups = report.kpis.groups
    name = _name(w("daily_availability"), used)
    used.add(name)
    sheet = book.create_sheet(name, 1)
    headers = ["day", w("site_availability"), *(g.group.name for g in groups), *(w(s) for s in SEVERITIES)]
    sheet.append(headers)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for d in report.days:
        sheet.append([d.label, d.site.availability, *(d.groups.get(g.group.id) for g in groups),
                      *(d.alarms[s] for s in SEVERITIES)])
    n = len(report.days)
    rates = 1 + len(groups)
    for col in range(2, 2 + rates):
        for (cell,) in sheet.iter_rows(min_row=2, min_col=col, max_col=col):
            cell.number_format = "0.00%"
    if n == 0:
        return
    days = Reference(sheet, min_col=1, min_row=2, max_row=n + 1)
    line = LineChart()
    line.title = w("daily_availability") + (f" / {w('daily_intact')}" if groups else "")
    line.y_axis.number_format = "0%"
    line.add_data(Reference(sheet, min_col=2, max_col=1 + rates, min_row=1, max_row=n + 1), titles_from_data=True)
    line.set_categories(days)
    line.height, line.width = 8, 24
    sheet.add_chart(line, f"{_col(len(headers) + 2)}2")
    bars = BarChart()
    bars.type, bars.grouping, bars.overlap = "col", "stacked", 100
    bars.title = w("alarms_per_day")
    first = 2 + rates
    bars.add_data(Reference(sheet, min_col=first, max_col=first + len(SEVERITIES) - 1, min_row=1,
                            max_row=n + 1), titles_from_data=True)
    bars.set_categories(days)
    bars.height, bars.width = 8, 24
    sheet.add_chart(bars, f"{_col(len(headers) + 2)}20")


def _col(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index)
