"""The site engineer's commands: alarms, tickets and maintenance mode of the running gateway.

`gateway alarms`, `ack`, `shelve`, `unshelve`, `tickets`, `ticket` and `maintenance`
talk to the daemon over its local control socket (gateway/commands/local.py), so they
work with the platform unreachable or not configured at all. Changes are commands like
the platform's: the daemon authorises, runs and audits them (`gateway audit` shows them,
with `via: cli:<account>`). Lists are read-only queries and are not audited.

Exit codes: 0 done, 1 refused (the reason is printed), 2 the daemon could not be
reached (not running, wrong data dir, no permission). With --json every one prints the
daemon's answer as JSON on stdout (a list's items; a command's whole reply, refused or
not), as `probe`, `scan` and `tail` do.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.commands.local import ControlError, request, socket_path
from gateway.commands.models import TICKET_STEPS
from gateway.config.types import parse_duration
from gateway.textable import format_table

QUERY_TIMEOUT = 10.0  # seconds
# A command may wait behind one in flight (a device write has 15 s), so allow for that.
COMMAND_TIMEOUT = 30.0  # seconds

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


# --- shared ------------------------------------------------------------------------------


def login_user() -> str:
    """Who is at the keyboard: the account that ran sudo, else the current one.

    The default `by` for the audit log. The daemon records the socket peer's account in
    `via` regardless, so this is what the engineer says, that is what the kernel says.
    """
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != "root":
        return sudo_user
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (a bare container): still say something
        return f"uid:{os.getuid()}"


def new_request_id() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


def _data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else data_dir from the site config (as `gateway status` finds it)."""
    if args.data_dir:
        return Path(args.data_dir)
    from gateway.cli import load_or_exit

    return load_or_exit(args.config).data_dir


def _utf8_output() -> None:
    """Names and messages are Chinese: never let a non-UTF-8 locale turn them into a crash."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="replace")


def _ask(args: argparse.Namespace, body: dict[str, Any], timeout: float) -> dict[str, Any] | int:
    """The daemon's reply, or EXIT_UNREACHABLE after saying why it could not be asked."""
    _utf8_output()
    try:
        return request(socket_path(_data_dir(args)), body, timeout=timeout)
    except ControlError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _query(args: argparse.Namespace, kind: str) -> Any:
    """A query's result, or an exit code after printing why there is none."""
    reply = _ask(args, {"query": kind, "all": bool(getattr(args, "all", False))}, QUERY_TIMEOUT)
    if isinstance(reply, int):
        return reply
    if not reply.get("ok"):
        print(f"gateway: {reply.get('error') or 'the gateway gave no reason'}", file=sys.stderr)
        return EXIT_REFUSED
    return (reply.get("result") or {}).get(kind)


def _command(args: argparse.Namespace, body: dict[str, Any],
             describe: Callable[[dict[str, Any], str], str]) -> int:
    """Send one command; print what changed, or why it was refused."""
    by = args.by or login_user()
    command = {"id": new_request_id(), **{k: v for k, v in body.items() if v is not None}, "by": by}
    reply = _ask(args, command, COMMAND_TIMEOUT)
    if isinstance(reply, int):
        return reply
    if getattr(args, "json", False):  # the reply as the daemon gave it: id, ok, result/error
        print(json.dumps(reply, ensure_ascii=False))
        return EXIT_OK if reply.get("ok") else EXIT_REFUSED
    if not reply.get("ok"):
        print(f"refused: {reply.get('error') or 'the gateway gave no reason'}", file=sys.stderr)
        for error in (reply.get("result") or {}).get("errors") or []:
            print(f"  {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(describe(reply.get("result") or {}, by))
    return EXIT_OK


def local_time(value: Any) -> str:
    """An ISO-8601 time or epoch seconds as the box's local time; '-' for none."""
    if value is None or value == "":
        return "-"
    try:
        if isinstance(value, int | float):
            when = datetime.fromtimestamp(value, UTC)
        else:
            when = datetime.fromisoformat(str(value))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def _duration(text: str) -> str:
    """argparse type for --for: checked here, sent as written ("2h")."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return text


def local_iso(text: str, example: str = "2026-11-23T18:00") -> str:
    """argparse type for a time (--until, --at): ISO-8601; without a zone it is the box's
    local time."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time such as {example} or {example}+08:00"
        ) from None
    return (when if when.tzinfo is not None else when.astimezone()).isoformat()


# --- alarms ------------------------------------------------------------------------------


def cmd_alarms(args: argparse.Namespace) -> int:
    return _list(args, "alarms", ("alarm", "state", "severity", "since", "message"),
                 lambda a: (a.get("alarm") or a.get("id"), _alarm_state(a), a.get("severity"),
                            local_time(_since(a)), a.get("message") or "-"),
                 "no alarms", "no active alarms (--all lists every alarm)")


def _list(args: argparse.Namespace, kind: str, headers: tuple[str, ...],
          row: Callable[[dict[str, Any]], tuple[Any, ...]], none: str, none_active: str) -> int:
    """A query's items as a table (or JSON with --json)."""
    items = _query(args, kind)
    if isinstance(items, int):
        return items
    if args.json:
        print(json.dumps(items, ensure_ascii=False))
    elif not items:
        print(none if args.all else none_active)
    else:
        print(format_table(headers, [row(item) for item in items]))
    return EXIT_OK


def _since(alarm: dict[str, Any]) -> Any:
    """When the alarm became what it is: raised for a live alarm, its last change otherwise."""
    if alarm.get("state") != "normal" and alarm.get("raised_at"):
        return alarm["raised_at"]
    return alarm.get("last_change")


def _alarm_state(alarm: dict[str, Any]) -> str:
    state = str(alarm.get("state"))
    if state == "shelved" and alarm.get("shelved_until"):
        state += f" until {local_time(alarm['shelved_until'])}"
    if alarm.get("chattering"):
        state += " (chattering)"
    return state


def _describe_alarm(alarm_id: str) -> Callable[[dict[str, Any], str], str]:
    def describe(result: dict[str, Any], by: str) -> str:
        if not result:
            return f"{alarm_id}: done (by {by})"
        return f"{result.get('alarm') or alarm_id}: {_alarm_state(result)} (by {by})"

    return describe


def cmd_ack(args: argparse.Namespace) -> int:
    body = {"type": "ack_alarm", "alarm": args.alarm, "comment": args.comment}
    return _command(args, body, _describe_alarm(args.alarm))


def cmd_shelve(args: argparse.Namespace) -> int:
    body = {"type": "shelve_alarm", "alarm": args.alarm, "for": args.for_, "until": args.until,
            "reason": args.reason}
    return _command(args, body, _describe_alarm(args.alarm))


def cmd_unshelve(args: argparse.Namespace) -> int:
    return _command(args, {"type": "unshelve_alarm", "alarm": args.alarm},
                    _describe_alarm(args.alarm))


# --- tickets -----------------------------------------------------------------------------


def cmd_tickets(args: argparse.Namespace) -> int:
    return _list(args, "tickets", ("ticket", "device", "state", "priority", "due", "title"),
                 lambda t: (t.get("ticket") or t.get("id"), t.get("device"), t.get("state"),
                            t.get("priority"), local_time(t.get("due")), t.get("title") or "-"),
                 "no tickets", "no open tickets (--all includes resolved ones)")


def cmd_ticket(args: argparse.Namespace) -> int:
    body = {"type": "update_ticket", "ticket": args.ticket, "step": args.step,
            "note": args.note, "owner": args.owner, "backup": args.backup}

    def describe(result: dict[str, Any], by: str) -> str:
        if not result:
            return f"{args.ticket}: {args.step} done (by {by})"
        parts = [str(result.get("state"))]
        if args.step == "dispatch" and result.get("owner"):
            backup = f", backup {result['backup']}" if result.get("backup") else ""
            parts.append(f"owner {result['owner']}{backup}")
        if result.get("due"):
            parts.append(f"due {local_time(result['due'])}")
        return f"{result.get('ticket') or args.ticket}: {', '.join(parts)} (by {by})"

    return _command(args, body, describe)


# --- maintenance -------------------------------------------------------------------------


def cmd_maintenance(args: argparse.Namespace) -> int:
    on = not args.off
    body = {"type": "maintenance", "device": args.device, "on": on, "for": args.for_,
            "reason": args.reason}

    def describe(result: dict[str, Any], by: str) -> str:
        device = result.get("device") or args.device
        if result.get("maintenance", on):
            return f"{device}: in maintenance until {local_time(result.get('until'))}, " \
                   f"its alarms suppressed (by {by})"
        return f"{device}: out of maintenance, its alarms announced again (by {by})"

    return _command(args, body, describe)


# --- parser ------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:
    """Add the subcommands to `gateway`'s parser; `add` gives each -c/--config."""

    def common(cmd: argparse.ArgumentParser, *, changes: bool) -> argparse.ArgumentParser:
        cmd.add_argument("--data-dir", help="the running gateway's data dir, where control.sock "
                                            "is (default: data_dir from site.yaml)")
        if changes:
            cmd.add_argument("--by", metavar="NAME",
                             help="who does this, for the audit log (default: your login name)")
        cmd.add_argument("--json", action="store_true",
                         help="print the gateway's answer as JSON, for scripts")
        return cmd

    alarms = common(add("alarms", cmd_alarms, "the running gateway's alarms (active ones)"),
                    changes=False)
    alarms.add_argument("--all", action="store_true", help="every alarm, normal ones too")

    ack = common(add("ack", cmd_ack, "acknowledge an alarm"), changes=True)
    ack.add_argument("alarm", help="the alarm id, e.g. pump_b1_1.low_outlet_pressure")
    ack.add_argument("--comment", help="what you saw or did, kept with the acknowledgement")

    shelve = common(add("shelve", cmd_shelve, "hide an alarm for a while (at most 7 days)"),
                    changes=True)
    shelve.add_argument("alarm")
    until = shelve.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="for_", type=_duration, metavar="DURATION",
                       help="how long, e.g. 30m, 2h, 1d")
    until.add_argument("--until", type=local_iso, metavar="TIME",
                       help="until when, e.g. 2026-11-23T18:00 (local time unless a zone is given)")
    shelve.add_argument("--reason")

    unshelve = common(add("unshelve", cmd_unshelve, "show a shelved alarm again"), changes=True)
    unshelve.add_argument("alarm")

    tickets = common(add("tickets", cmd_tickets, "the running gateway's tickets (open ones)"),
                     changes=False)
    tickets.add_argument("--all", action="store_true",
                         help="every ticket not yet closed, resolved ones too")

    ticket = common(add("ticket", cmd_ticket, "move a ticket on by one step, or add a note"),
                    changes=True)
    ticket.add_argument("ticket", help="the ticket id, e.g. T-20261123-0001")
    ticket.add_argument("step", choices=TICKET_STEPS)
    ticket.add_argument("--owner", help="dispatch: who takes the ticket (首问负责制)")
    ticket.add_argument("--backup", help="dispatch: who stands in for the owner")
    ticket.add_argument("--note", help="what was done or found; required for step note")

    maintenance = common(add("maintenance", cmd_maintenance,
                             "put a device in maintenance mode (alarms suppressed) or end it"),
                         changes=True)
    maintenance.add_argument("device")
    mode = maintenance.add_mutually_exclusive_group(required=True)
    mode.add_argument("--for", dest="for_", type=_duration, metavar="DURATION",
                      help="how long, e.g. 2h; the mode ends by itself then")
    mode.add_argument("--off", action="store_true", help="end maintenance mode now")
    maintenance.add_argument("--reason")
