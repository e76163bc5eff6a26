"""`gateway equipment` and `gateway report`: the equipment ledger (设备台账) and the
monthly report. Both only read the data dir (`equipment.db`, `tickets.db`, `patrol.db`,
`energy.db`, each read-only and safe while the daemon writes), so they work with or
without a running gateway:

    gateway equipment [DEVICE] [--month 2026-10] [--json] [--verify]
    gateway equipment [DEVICE] --format csv|xlsx [--lang en|zh] [--output FILE]
    gateway report --month 2026-10 [--format html|pdf|xlsx] [--lang en|zh] [--output FILE]

Exit codes as the other commands: 0 done, 1 refused or nothing to show, 2 the data could
not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli_ops import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, AddCommand, _utf8_output
from gateway.energy.ledger_cli import month_arg
from gateway.textable import cell_width, format_table

LANGUAGES = ("en", "zh")


def _open_ledger(data_dir: Path) -> Any:
    from gateway.equipment.store import FILE, ReadOnlyLedger

    try:
        return ReadOnlyLedger(data_dir / FILE)
    except FileNotFoundError:
        print(f"no equipment ledger at {data_dir / FILE}; is the gateway running with this data "
              "dir (pass --data-dir), and has it run since the equipment ledger was added?",
              file=sys.stderr)
        return None


# --- gateway equipment ------------------------------------------------------------------------


def cmd_equipment(args: argparse.Namespace) -> int:
    from gateway.cli import load_or_exit
    from gateway.config.explain import did_you_mean
    from gateway.energy.ledger import month_bounds
    from gateway.equipment import export
    from gateway.equipment.ledger import COMMISSIONED
    from gateway.equipment.words import Words

    _utf8_output()
    config = load_or_exit(args.config)
    data_dir = Path(args.data_dir) if args.data_dir else config.data_dir
    reader = _open_ledger(data_dir)
    if reader is None:
        return EXIT_UNREACHABLE
    with reader:
        if args.verify:
            checked, broken = reader.verify()
            if broken is not None:
                print(f"equipment ledger: entry #{broken} does not follow the one before it: the "
                      f"ledger was changed outside the gateway ({checked} entries checked)")
                return EXIT_REFUSED
            print(f"equipment ledger intact: {checked} entries, each hash follows the one before")
            return EXIT_OK
        start = end = None
        if args.month:
            start, end = month_bounds(args.month, config.site.timezone)
        known = {d.id for d in config.devices} | set(reader.devices())
        if args.device and args.device not in known:
            print(f"no device {args.device!r} in the configuration or the ledger"
                  f"{did_you_mean(args.device, sorted(known))}", file=sys.stderr)
            return EXIT_REFUSED
        entries = reader.entries(device=args.device, start=start, end=end)
        commissioned = {e.device: e.ts for e in reader.entries(kinds=(COMMISSIONED,))}
    w = Words(args.lang, config.site.timezone)
    names = {d.id: d.name or d.id for d in config.devices}
    cards = export.assets(config, entries, commissioned, only=args.device)
    if args.format in ("csv", "xlsx"):
        title = [w("equipment_ledger"), config.site.name, args.month or "", args.device or ""]
        parts = export.tables(cards, entries, names, w)
        if args.format == "xlsx":
            output = Path(args.output or "equipment-" + "-".join(
                p for p in (config.site.id, args.device, args.month) if p) + ".xlsx")
            export.write_xlsx(output, title, parts, w)
            print(f"wrote {output}: {len(cards)} devices, {len(entries)} entries", file=sys.stderr)
            return EXIT_OK
        if args.output and args.output != "-":
            with open(args.output, "w", encoding="utf-8-sig", newline="") as out:  # BOM: Excel
                export.write_csv(out, title, parts, w)
            print(f"wrote {args.output}", file=sys.stderr)
            return EXIT_OK
        export.write_csv(sys.stdout, title, parts, w)
        return EXIT_OK
    if args.json:
        print(json.dumps({"assets": [c.__dict__ if not hasattr(c, "__slots__") else
                                     {k: getattr(c, k) for k in c.__slots__} for c in cards],
                          "entries": [e.to_dict() | {"hash": e.hash} for e in entries]},
                         ensure_ascii=False))
        return EXIT_OK
    if args.device:
        _print_card(cards[0], entries, w)
    else:
        _print_assets(cards, w)
    return EXIT_OK


def _print_assets(cards: list[Any], w: Any) -> None:
    rows = [(c.device, c.name, w.system(c.system), c.location or "-", c.vendor, c.model, c.serial,
             c.warranty_end, w.time(c.commissioned) or "-", c.failures,
             w.time(c.last_maintenance) or "-") for c in cards]
    print(format_table([w(k) for k in ("device", "name", "system", "location", "vendor", "model",
                                       "serial", "warranty_end", "commissioned", "failures",
                                       "last_maintenance")], rows))


def _print_card(card: Any, entries: list[Any], w: Any) -> None:
    from gateway.equipment.export import details_text

    fields = [("device", card.device), ("name", card.name), ("system", w.system(card.system)),
              ("location", card.location), ("vendor", card.vendor), ("model", card.model),
              ("serial", card.serial), ("purchase_date", card.purchase_date),
              ("warranty_end", card.warranty_end), ("commissioned", w.time(card.commissioned)),
              ("failures", card.failures), ("last_maintenance", w.time(card.last_maintenance))]
    width = max(cell_width(w(k)) for k, _ in fields)
    for key, value in fields:
        label = w(key)
        print(f"{label}{' ' * (width - cell_width(label))}  {value if value not in (None, '') else '-'}")
    if not card.configured:
        print("(not a configured device: its history comes from tickets and maintenance plans)")
    print()
    if not entries:
        print("no history yet")
        return
    rows = [(e.seq, w.time(e.ts, seconds=True), w.kind(e.kind), e.ref or "", details_text(e.body))
            for e in entries]
    print(format_table([w(k) for k in ("entry", "time", "what", "ref", "details")], rows))


# --- gateway report ------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.cli import load_or_exit
    from gateway.equipment.document import build_document
    from gateway.equipment.report import build_report

    _utf8_output()
    config = load_or_exit(args.config)
    data_dir = Path(args.data_dir) if args.data_dir else config.data_dir
    try:
        report = build_report(config, data_dir, args.month, time.time())
    except FileNotFoundError as exc:
        print(f"report: {exc}; is the gateway running with this data dir (pass --data-dir)?",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    doc = build_document(report, args.lang)
    suffix = "" if args.lang == "en" else f".{args.lang}"
    output = Path(args.output or f"report-{config.site.id}-{args.month}{suffix}.{args.format}")
    if args.format == "html":
        from gateway.equipment.html import render_html

        output.write_text(render_html(doc, Path(args.template_dir) if args.template_dir else None),
                          encoding="utf-8")
    elif args.format == "xlsx":
        from gateway.equipment.xlsx import write_xlsx

        write_xlsx(doc, report, output)
    else:
        from gateway.equipment.pdf import write_pdf

        try:
            write_pdf(doc, output, args.font)
        except FileNotFoundError as exc:
            print(f"report: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    k = report.kpis
    availability = "-" if k.site.availability is None else f"{k.site.availability:.2%}"
    print(f"wrote {output}: {report.month}, {len(k.devices)} devices, availability "
          f"{availability}, {len(k.site.failures)} failures, {len(report.service.corrective)} "
          f"tickets" + ("" if report.complete else " (month not over)"), file=sys.stderr)
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:
    """Add `equipment` and `report` to `gateway`'s parser."""
    equipment = add("equipment", cmd_equipment,
                    "the equipment ledger (设备台账): asset cards and each device's history; "
                    "works without a running daemon")
    equipment.add_argument("device", nargs="?", help="one device (default: every device's card)")
    equipment.add_argument("--month", type=month_arg, help="only the history of this local month, e.g. 2026-10")
    equipment.add_argument("--format", choices=("text", "csv", "xlsx"), default="text",
                           help="text (default) on the terminal, or an export")
    equipment.add_argument("--lang", choices=LANGUAGES, default="en", help="headers and words: en or zh (中文)")
    equipment.add_argument("--output", "-o", metavar="FILE",
                           help="write here (csv default: standard output; xlsx default: "
                                "equipment-<site>[-<device>][-<month>].xlsx)")
    equipment.add_argument("--json", action="store_true")
    equipment.add_argument("--verify", action="store_true",
                           help="check the ledger's hash chain: exit 1 if an entry was changed")
    equipment.add_argument("--data-dir", help="where equipment.db is (default: data_dir from site.yaml)")

    report = add("report", cmd_report,
                 "the site's monthly report: equipment and service KPIs, patrols, alarms, energy "
                 "and water; works without a running daemon")
    report.add_argument("--month", required=True, type=month_arg, help="the local month, e.g. 2026-10")
    report.add_argument("--format", choices=("html", "pdf", "xlsx"), default="html")
    report.add_argument("--lang", choices=LANGUAGES, default="en", help="en or zh (中文)")
    report.add_argument("--output", "-o", metavar="FILE",
                        help="default: report-<site>-<month>[.zh].<format>")
    report.add_argument("--data-dir", help="the gateway's data dir (default: data_dir from site.yaml)")
    report.add_argument("--font", metavar="TTF", help="pdf: a TrueType font with Chinese glyphs "
                                                      "to embed (default: one found on the box)")
    report.add_argument("--template-dir", metavar="DIR",
                        help="html: a folder with the site's own report.html.j2")
