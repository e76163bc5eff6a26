"""`gateway meters ...` and `gateway ledger`: meter entries and the monthly ledger (台账).

Entries change what the ledger will say, so they are commands to the running daemon
over its control socket, authorised and audited like the platform's (`gateway audit`
shows them with `via: cli:<account>`):

    gateway meters read METER VALUE [--point P] [--at TIME] [--by NAME]
    gateway meters replace METER --old-final X --new-initial Y [--point P] [--at TIME]
    gateway meters snapshot --unit 3-2-1201
    gateway meters list [--json]

The ledger only reads `<data_dir>/energy.db` (read-only, safe while the daemon writes),
so it works with or without a running daemon:

    gateway ledger --month 2026-10 [--group ID] [--format csv|xlsx] [--lang en|zh] [--output FILE]

Exit codes as the other commands: 0 done, 1 refused or nothing to show, 2 the daemon or
the data could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.cli_ops import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    QUERY_TIMEOUT,
    AddCommand,
    _ask,
    _command,
    _data_dir,
    _utf8_output,
    local_iso,
    local_time,
)
from gateway.textable import format_table


def _at(text: str) -> str:
    return local_iso(text, "2026-10-31T17:30")


def _reading(text: str) -> float:
    """argparse type for a reading: a number of at least 0, as on the dial."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a reading; write the number on the dial") from None
    if value != value or value < 0 or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a reading; a meter reads 0 or more")
    return value


def _counter_name(result: dict[str, Any], meter: str) -> str:
    point = result.get("point")
    return f"{result.get('meter') or meter}" + (f".{point}" if point else "")


# --- meters --------------------------------------------------------------------------------


def cmd_meters_read(args: argparse.Namespace) -> int:
    body = {"type": "meter_reading", "meter": args.meter, "value": args.value,
            "point": args.point, "at": args.at}

    def describe(result: dict[str, Any], by: str) -> str:
        at = f" at {local_time(result['at'])}" if result.get("at") else ""
        return f"{_counter_name(result, args.meter)}: reading {result.get('value', args.value):g} kept{at} (by {by})"

    return _command(args, body, describe)


def cmd_meters_replace(args: argparse.Namespace) -> int:
    body = {"type": "meter_replace", "meter": args.meter, "old_final": args.old_final,
            "new_initial": args.new_initial, "point": args.point, "at": args.at}

    def describe(result: dict[str, Any], by: str) -> str:
        credited = result.get("credited")
        counted = f"; {credited:g} {result.get('unit') or ''} counted since the last reading".rstrip() \
            if isinstance(credited, int | float) else ""
        return (f"{_counter_name(result, args.meter)}: replaced, old meter's final reading "
                f"{args.old_final:g}, new meter starts at {args.new_initial:g}{counted} (by {by})")

    return _command(args, body, describe)


def cmd_meters_snapshot(args: argparse.Namespace) -> int:
    body = {"type": "meter_snapshot", "household": args.unit}

    def describe(result: dict[str, Any], by: str) -> str:
        rows = [(m.get("meter"), m.get("point"), "-" if m.get("reading") is None else f"{m['reading']:g}",
                 m.get("unit") or "", local_time(m.get("at"))) for m in result.get("meters") or []]
        head = f"handover snapshot of {result.get('household') or args.unit} at " \
               f"{local_time(result.get('ts'))} (by {by})"
        unread = sum(1 for m in result.get("meters") or [] if m.get("reading") is None)
        tail = f"\n{unread} meter(s) have no reading yet: read them by hand " \
               "(gateway meters read) and take the snapshot again" if unread else ""
        return head + "\n" + format_table(("meter", "counter", "reading", "unit", "read at"), rows) + tail

    if args.json:
        def describe_json(result: dict[str, Any], by: str) -> str:
            return json.dumps(result, ensure_ascii=False)

        return _command(args, body, describe_json)
    return _command(args, body, describe)


def cmd_meters_list(args: argparse.Namespace) -> int:
    """The running gateway's counters; without a daemon, the newest readings on file."""
    _utf8_output()
    reply = _ask(args, {"query": "meters"}, QUERY_TIMEOUT)
    if isinstance(reply, int):
        return _meters_from_file(args)
    if not reply.get("ok"):
        print(f"gateway: {reply.get('error') or 'the gateway gave no reason'}", file=sys.stderr)
        return EXIT_REFUSED
    meters = (reply.get("result") or {}).get("meters") or []
    if args.json:
        print(json.dumps(meters, ensure_ascii=False))
        return EXIT_OK
    if not meters:
        print("no meters: mark cumulative points with counter: in the profiles (docs/energy.md)")
        return EXIT_OK
    rows = [(m.get("device"), m.get("point"), m.get("commodity") or "-", m.get("household") or "-",
             "-" if m.get("raw") is None else f"{m['raw']:g}", m.get("unit") or "",
             "-" if m.get("total") is None else f"{m['total']:g}", local_time(m.get("ts")),
             ("manual" if m.get("manual") else "") + (f" {m['flag']}" if m.get("flag") else ""))
            for m in meters]
    print(format_table(("meter", "counter", "commodity", "household", "reading", "unit",
                        "total", "read at", "notes"), rows))
    return EXIT_OK


def _meters_from_file(args: argparse.Namespace) -> int:
    from gateway.energy.reader import EnergyReader

    path = _data_dir(args) / "energy.db"
    try:
        reader = EnergyReader(path)
    except (FileNotFoundError, OSError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    with reader:
        latest = reader.latest()
    print(f"(the gateway is not answering: the newest readings kept in {path})", file=sys.stderr)
    if args.json:
        print(json.dumps([r._asdict() for r in latest], ensure_ascii=False))
        return EXIT_OK
    rows = [(r.device, r.point, f"{r.raw:g}", f"{r.total:g}", local_time(r.ts), r.source,
             r.by or "-") for r in latest]
    print(format_table(("meter", "counter", "reading", "total", "read at", "source", "by"), rows))
    return EXIT_OK


# --- ledger --------------------------------------------------------------------------------


def cmd_ledger(args: argparse.Namespace) -> int:
    from gateway.cli import load_or_exit
    from gateway.energy.ledger import build_ledger, write_csv, write_xlsx
    from gateway.energy.reader import EnergyReader

    _utf8_output()
    config = load_or_exit(args.config)
    data_dir = Path(args.data_dir) if args.data_dir else config.data_dir
    try:
        reader = EnergyReader(data_dir / "energy.db")
    except FileNotFoundError:
        print(f"no energy data at {data_dir / 'energy.db'}; is the gateway running with this "
              "data dir, and does the site have meters (counter: points)?", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        with reader:
            ledger = build_ledger(config, reader, args.month, group=args.group)
    except ValueError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.format == "xlsx":
        output = Path(args.output or f"ledger-{config.site.id}-{args.month}.xlsx")
        write_xlsx(ledger, output, args.lang)
        print(f"wrote {output}: {len(ledger.meters)} meters, {len(ledger.groups)} groups, "
              f"{len(ledger.handovers)} handover readings", file=sys.stderr)
        return EXIT_OK
    if args.output and args.output != "-":
        # a BOM: Excel opens a UTF-8 CSV with Chinese headers correctly only with one
        with open(args.output, "w", encoding="utf-8-sig", newline="") as out:
            write_csv(ledger, out, args.lang)
        print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    write_csv(ledger, sys.stdout, args.lang)
    return EXIT_OK


def month_arg(text: str) -> str:
    """argparse's type for a `--month` (2026-10); `gateway equipment` and `report` use it too."""
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month; write it as 2026-10") from None
    return text


# --- parser --------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:
    """Add `meters` (with its own subcommands) and `ledger` to `gateway`'s parser."""
    from gateway.cli import default_config
    from gateway.energy.ledger import LANGUAGES

    meters = sub.add_parser("meters", help="meter readings by hand, replacements, handover "
                                           "snapshots, the meters' latest readings",
                            description="Meter entries on the running gateway (audited) "
                                        "and its meters' latest readings.")
    actions = meters.add_subparsers(dest="action", required=True)

    def action(name: str, func: Any, help_text: str, *, changes: bool) -> argparse.ArgumentParser:
        cmd = actions.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("-c", "--config", default=default_config(),
                         help="site.yaml (default: $GATEWAY_CONFIG, /etc/gateway/site.yaml, "
                              "config/site.yaml)")
        cmd.add_argument("--data-dir", help="the running gateway's data dir, where control.sock "
                                            "is (default: data_dir from site.yaml)")
        if changes:
            cmd.add_argument("--by", metavar="NAME",
                             help="who read or changed the meter, for the audit log and the "
                                  "ledger (default: your login name)")
        cmd.set_defaults(func=func)
        return cmd

    read = action("read", cmd_meters_read, "enter a reading taken by hand", changes=True)
    read.add_argument("meter", help="the meter: a device id or a manual meter's id")
    read.add_argument("value", type=_reading, help="the reading on the dial (kWh, m³)")
    read.add_argument("--point", help="the counter, when the meter has several (energy_import)")
    read.add_argument("--at", type=_at, metavar="TIME",
                      help="when it was read, e.g. 2026-10-31T17:30 (local time unless a zone "
                           "is given; default now)")

    replace = action("replace", cmd_meters_replace,
                     "record a meter swap: the totals continue across it", changes=True)
    replace.add_argument("meter")
    replace.add_argument("--old-final", type=_reading, required=True, metavar="X",
                         help="the old meter's last reading")
    replace.add_argument("--new-initial", type=_reading, required=True, metavar="Y",
                         help="the new meter's reading when it was fitted")
    replace.add_argument("--point", help="the counter, when the meter has several")
    replace.add_argument("--at", type=_at, metavar="TIME", help="when it was swapped (default now)")

    snapshot = action("snapshot", cmd_meters_snapshot,
                      "record every meter of a household at handover (move-in)", changes=True)
    snapshot.add_argument("--unit", required=True, metavar="HOUSEHOLD",
                          help="the household, as the meters' household: says, e.g. 3-2-1201")
    snapshot.add_argument("--json", action="store_true")

    listing = action("list", cmd_meters_list, "every meter's counters and latest reading",
                     changes=False)
    listing.add_argument("--json", action="store_true")

    ledger = add("ledger", cmd_ledger, "the monthly ledger (台账): per meter and per group, "
                                       "from the stored readings; works without a running daemon")
    ledger.add_argument("--month", required=True, type=month_arg, help="the local month, e.g. 2026-10")
    ledger.add_argument("--group", help="only this group and its meters")
    ledger.add_argument("--format", choices=("csv", "xlsx"), default="csv")
    ledger.add_argument("--lang", choices=LANGUAGES, default="en",
                        help="column headers and words: en or zh (中文)")
    ledger.add_argument("--output", "-o", metavar="FILE",
                        help="write here (csv default: standard output; xlsx default: "
                             "ledger-<site>-<month>.xlsx)")
    ledger.add_argument("--data-dir", help="where energy.db is (default: data_dir from site.yaml)")
