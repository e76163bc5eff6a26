"""The equipment ledger (设备台账) as tables: each device's asset card (from the
configuration) with what its history says, and the history itself, entry by entry.

`ledger_tables` gathers; `write_csv` (UTF-8, a title line then each table after an empty
line) and `write_xlsx` (a sheet per table) write it with English or Chinese headers, as
`gateway ledger` does for the meters.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway.equipment.ledger import ALARM_RAISED, MAINTENANCE_DONE
from gateway.equipment.store import Entry
from gateway.equipment.words import Words

ASSET_COLUMNS = (("device", "text"), ("name", "text"), ("system", "text"), ("location", "text"),
                 ("vendor", "text"), ("model", "text"), ("serial", "text"), ("purchase_date", "text"),
                 ("warranty_end", "text"), ("commissioned", "time"), ("failures", "int"),
                 ("last_maintenance", "time"))
HISTORY_COLUMNS = (("entry", "int"), ("time", "time"), ("device", "text"), ("name", "text"),
                   ("what", "text"), ("ref", "text"), ("details", "text"), ("hash", "text"))


@dataclass(slots=True)
class Asset:
    """A device's card: the configuration's asset fields and what the ledger adds."""

    device: str
    name: str
    system: str
    location: str
    vendor: str | None
    model: str | None
    serial: str | None
    purchase_date: str | None
    warranty_end: str | None
    configured: bool = True
    commissioned: float | None = None
    failures: int = 0  # fault-severity alarms raised in the entries given
    last_maintenance: float | None = None

    def row(self) -> list[Any]:
        return [self.device, self.name, self.system, self.location, self.vendor, self.model,
                self.serial, self.purchase_date, self.warranty_end, self.commissioned,
                self.failures, self.last_maintenance]


def location_text(location: Any) -> str:
    return " / ".join(p for p in (location.building, location.floor, location.room) if p)


def assets(config: Any, entries: Sequence[Entry], commissioned: dict[str, float],
           only: str | None = None) -> list[Asset]:
    """Cards of the configured devices (and of ids the entries name that are not devices,
    e.g. a water tank with maintenance plans), in file order."""
    severities = set(config.kpi.fault_severities)
    out: dict[str, Asset] = {}
    for d in config.devices:
        profile = config.profiles.get(d.profile)
        a = d.asset
        out[d.id] = Asset(d.id, d.name or d.id, profile.system if profile else "",
                          location_text(d.location), a.vendor or (profile.vendor if profile else None),
                          a.model or (profile.model if profile else None), a.serial,
                          a.purchase_date.isoformat() if a.purchase_date else None,
                          a.warranty_end.isoformat() if a.warranty_end else None)
    for e in entries:
        if e.device not in out:
            out[e.device] = Asset(e.device, e.device, "", "", None, None, None, None, None, False)
        card = out[e.device]
        if e.kind == ALARM_RAISED and e.body.get("severity") in severities:
            card.failures += 1
        elif e.kind == MAINTENANCE_DONE:
            card.last_maintenance = max(card.last_maintenance or 0.0, e.ts)
    for device, ts in commissioned.items():
        if device in out:
            out[device].commissioned = ts
    cards = list(out.values())
    return [c for c in cards if only is None or c.device == only]


def details_text(body: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v if not isinstance(v, dict | list) else json.dumps(v, ensure_ascii=False)}"
                     for k, v in body.items() if v not in (None, ""))


def history_rows(entries: Sequence[Entry], names: dict[str, str], w: Words) -> list[list[Any]]:
    return [[e.seq, e.ts, e.device, names.get(e.device, e.device), w.kind(e.kind), e.ref or "",
             details_text(e.body), (e.hash or "")[:12]] for e in entries]


def tables(cards: list[Asset], entries: Sequence[Entry], names: dict[str, str],
           w: Words) -> list[tuple[str, Sequence[tuple[str, str]], list[list[Any]]]]:
    """(title, columns, rows) of the assets and the history."""
    asset_rows = []
    for c in cards:
        row = c.row()
        row[2] = w.system(row[2])
        asset_rows.append(row)
    return [(w("assets"), ASSET_COLUMNS, asset_rows),
            (w("history"), HISTORY_COLUMNS, history_rows(entries, names, w))]


def write_csv(out: IO[str], title: list[str], parts: list[tuple[str, Sequence[tuple[str, str]],
              list[list[Any]]]], w: Words) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(title)
    for name, columns, rows in parts:
        writer.writerow([])
        writer.writerow([name])
        writer.writerow([w(k) for k, _ in columns])
        for row in rows:
            writer.writerow([w.text(kind, v) for (_, kind), v in zip(columns, row, strict=True)])


def write_xlsx(path: str | Path, title: list[str], parts: list[tuple[str, Sequence[tuple[str, str]],
               list[list[Any]]]], w: Words) -> None:
    from datetime import datetime

    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    info = book.active
    info.title = w("equipment_ledger")[:31]
    info.append(title)
    for name, columns, rows in parts:
        sheet = book.create_sheet(name[:31])
        sheet.append([w(k) for k, _ in columns])
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "A2"
        for row in rows:
            sheet.append([datetime.fromtimestamp(v, w.zone).replace(tzinfo=None)
                          if kind == "time" and isinstance(v, int | float) else v
                          for (_, kind), v in zip(columns, row, strict=True)])
        for index, (key, kind) in enumerate(columns, start=1):
            letter = sheet.cell(row=1, column=index).column_letter
            if kind == "time":
                for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = "yyyy-mm-dd hh:mm"
            width = max([len(w(key))] + [len(w.text(kind, r[index - 1])) for r in rows[:200]])
            sheet.column_dimensions[letter].width = min(60, max(8, width + 2))
    book.save(path)
