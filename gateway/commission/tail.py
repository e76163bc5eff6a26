"""`gateway tail`, the client: follow the running gateway's readings and events.

It asks the daemon for a tail over the control socket (stream.py is the daemon's side)
and prints a line per reading and per event as they happen, or with --json the stream's
own JSON lines. The daemon does the filtering, so a quiet filter costs nothing on the
socket; it drops what this client cannot take in time and says how much (on stderr).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from gateway.commands.local import ControlError, request_stream
from gateway.commission.terminal import interactive

ACK_TIMEOUT = 10.0  # seconds for the daemon to accept the tail


def tail_request(devices: list[str], points: list[str], systems: list[str], *,
                 readings: bool = True, events: bool = True) -> dict[str, Any]:
    return {"tail": True, "devices": devices, "points": points, "systems": systems,
            "readings": readings, "events": events}


def follow(path: Any, body: dict[str, Any], *, as_json: bool) -> int:
    """Print the stream until the daemon ends it (1) or Ctrl-C (0); 2 when the daemon
    cannot be reached, 1 when it refuses the tail."""
    lines = request_stream(path, body, timeout=ACK_TIMEOUT)
    try:
        ack = next(lines)
        if not ack.get("ok"):
            print(f"gateway: {ack.get('error') or 'the gateway refused the tail'}", file=sys.stderr)
            return 1
        if not _announce(ack.get("result") or {}, body):
            return 1
        for item in lines:
            if as_json:
                print(json.dumps(item, ensure_ascii=False), flush=True)
            elif item.get("type") == "dropped":
                print(f"... {item.get('count')} readings or events dropped: this terminal reads "
                      f"slower than the gateway emits ({item.get('total')} so far)", file=sys.stderr)
            else:
                print(format_item(item), flush=True)
    except ControlError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # piped into head(1), which has read enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    finally:
        lines.close()  # closes the socket: the daemon ends the tail
    print("gateway: the gateway ended the stream (it is stopping or restarting)", file=sys.stderr)
    return 1


def _announce(result: dict[str, Any], body: dict[str, Any]) -> bool:
    """Say what is followed (on a terminal); False, after saying so, when no device of
    the running gateway can match (a mistyped name would otherwise wait forever)."""
    if not result.get("devices") and (body["devices"] or body["systems"]):
        known = ", ".join(result.get("known") or []) or "none"
        print(f"gateway: no device of the running gateway matches "
              f"{_filters(body) or 'the filter'}; its devices include: {known}", file=sys.stderr)
        return False
    if interactive(sys.stderr):
        what = " and ".join(k for k in ("readings", "events") if body[k])
        print(f"following {what} of {result.get('devices')} device"
              f"{'s' if result.get('devices') != 1 else ''}"
              + (f" ({_filters(body)})" if _filters(body) else "") + "; Ctrl-C ends",
              file=sys.stderr)
    return True


def _filters(body: dict[str, Any]) -> str:
    parts = [f"--{name[:-1]} {pattern}" for name in ("devices", "points", "systems")
             for pattern in body[name]]
    return " ".join(parts)


def format_item(item: dict[str, Any]) -> str:
    """One stream object as a line: time, device, then the reading or what happened."""
    when = _clock(item.get("ts"))
    if item.get("type") == "reading":
        value = item.get("value")
        shown = f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))
        unit = f" {item['unit']}" if item.get("unit") and value is not None else ""
        if item.get("text"):
            unit += f" ({item['text']})"
        quality = item.get("quality")
        flag = f"  [{quality}]" if quality != "good" else ""
        return f"{when}  {item.get('device')}  {item.get('point')} = {shown}{unit}{flag}"
    return f"{when}  {item.get('device') or '-'}  {describe_event(item.get('event'), item.get('body') or {})}"


def describe_event(kind: Any, body: dict[str, Any]) -> str:
    """An event in a few words; what is not known is shown as its JSON."""
    if kind == "alarm_event":
        return (f"ALARM {body.get('alarm')} {body.get('transition')} -> {body.get('state')} "
                f"[{body.get('severity')}] {body.get('message') or ''}").rstrip()
    if kind == "alarm_state":
        return f"alarm {body.get('alarm')} is {body.get('state') or ('closed' if body.get('closed') else '?')}"
    if kind == "ticket_event":
        return f"TICKET {body.get('ticket')} {body.get('event')}" + (
            f": {body['title']}" if body.get("title") else "")
    if kind == "ticket_state":
        return f"ticket {body.get('ticket')} is {body.get('status') or body.get('state')}"
    if kind == "device_status":
        state = {True: "online", False: "OFFLINE"}.get(body.get("online"), "starting")
        error = f" ({body['last_error']})" if body.get("last_error") and not body.get("online") else ""
        return f"status {state}{error}"
    if kind == "equipment_event":
        details = body.get("details") or {}
        return f"ledger: {body.get('kind')}" + (
            f" {json.dumps(details, ensure_ascii=False, default=str)[:200]}" if details else "")
    if kind == "maintenance":
        return ("maintenance on until " + str(body.get("until"))) if body.get("maintenance") \
            else "maintenance off"
    return f"{kind} {json.dumps(body, ensure_ascii=False, default=str)[:300]}"


def _clock(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
