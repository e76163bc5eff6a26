"""The commissioning commands' command line: `gateway probe`, `scan modbus`, `tail`.

Exit codes, as the other commands': 0 done; 1 the device did not answer (probe), no id
answered (scan), or the gateway refused or ended the tail; 2 a mistake on the command
line or in the config, a line that cannot be opened, or a gateway that cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from gateway.config.types import parse_duration

EXIT_OK, EXIT_NO_ANSWER, EXIT_USAGE = 0, 1, 2


def _seconds(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 0.2, 500ms or 2s "
            "(with --watch, put the device before it: probe DEVICE --watch)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return seconds


# --- probe ---------------------------------------------------------------------------------


def _quiet_logs() -> None:
    """The table says what the drivers would log (a device answering, an exception):
    only errors go to stderr, nothing to stdout."""
    from gateway import logs

    logs.configure("error")


def cmd_probe(args: argparse.Namespace) -> int:
    from gateway.cli_ops import _utf8_output
    from gateway.commission.target import TargetError
    from gateway.config.errors import ConfigError

    _utf8_output()
    _quiet_logs()
    try:
        device, profile, bacnet = _probe_target(args)
    except TargetError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"probe: {exc.filename}: no such file", file=sys.stderr)
        return EXIT_USAGE
    outcome = [EXIT_NO_ANSWER]
    try:
        asyncio.run(_probe(args, device, profile, bacnet, outcome))
    except KeyboardInterrupt:
        pass  # --watch ends with Ctrl-C: the last round says how it went
    except BrokenPipeError:  # piped into head(1), which has read enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError) as exc:  # a serial port that cannot be opened, a BACnet bind
        print(f"probe: {device.id}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return outcome[0]


def _probe_target(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The device and profile to probe: from the config, or --profile with a line."""
    from gateway.commission.target import TargetError, device_from_args, line_given, load_profile

    if args.device:
        if args.profile or line_given(args):
            raise TargetError("give a DEVICE from the config, or --profile with --tcp/--rtu/"
                              "--rtu-over-tcp, not both")
        from gateway.cli import load_or_exit
        from gateway.config.explain import did_you_mean

        config = load_or_exit(args.config)
        device = next((d for d in config.devices if d.id == args.device), None)
        if device is None:
            ids = [d.id for d in config.devices]
            raise TargetError(f"no device {args.device!r} in {args.config}"
                              f"{did_you_mean(args.device, ids)}; see `gateway points`")
        update: dict[str, Any] = {}
        if args.unit is not None:
            update["unit"] = args.unit
        if args.timeout is not None:
            update["timeout"] = args.timeout
        if update:
            if not device.connection.type.startswith("modbus") and "unit" in update:
                raise TargetError(f"--unit is for Modbus devices; {device.id} is "
                                  f"{device.connection.type}")
            device = device.model_copy(update={
                "connection": device.connection.model_validate(
                    {**device.connection.model_dump(), **update})})
        bacnet = config.bacnet
        if args.local:
            bacnet = bacnet.model_copy(update={"address": args.local})
        _warn_if_daemon_polls(config, device)
        return device, config.profiles[device.profile], bacnet
    if not args.profile or not line_given(args):
        raise TargetError("name a DEVICE of the config (gateway probe pump_b1_1 -c site.yaml), "
                          "or give --profile FILE with --tcp HOST:PORT, --rtu PORT or "
                          "--rtu-over-tcp HOST:PORT")
    profile = load_profile(args.profile)
    return device_from_args(args, profile), profile, None


def _warn_if_daemon_polls(config: Any, device: Any) -> None:
    """Two masters on one RS-485 line garble each other's frames: say so before probing."""
    if device.connection.type != "modbus_rtu":
        return
    from gateway.commands.local import ControlError, request, socket_path

    try:
        request(socket_path(config.data_dir), {"query": "status"}, timeout=2.0)
    except ControlError:
        return  # no gateway running on this data dir
    print(f"probe: warning: the gateway is running and polls {device.connection.port} too; "
          "replies may be lost or garbled while both talk (stop it, or use `gateway tail`)",
          file=sys.stderr)


async def _probe(args: argparse.Namespace, device: Any, profile: Any, bacnet: Any,
                 outcome: list[int]) -> None:
    from gateway.commission.probe import make_prober, render
    from gateway.commission.terminal import Progress, Screen

    prober = make_prober(device, profile, bacnet=bacnet, wait=args.wait)
    watching = args.watch is not None
    screen = Screen(redraw=watching and not args.json)
    loop = asyncio.get_running_loop()
    try:
        while True:
            started = loop.time()
            with Progress(f"probing {device.id}", prober.steps, enabled=True) as progress:
                result = await prober.read(progress)
            outcome[0] = EXIT_OK if result.answered else EXIT_NO_ANSWER
            if args.json:
                print(json.dumps(result.to_dict(), ensure_ascii=False, default=str), flush=True)
            else:
                screen.show(render(result, clock=watching)
                            + ("" if screen.redraw or not watching else "\n"))
            if not watching:
                if not result.answered and not args.json:
                    print(f"probe: {device.id} did not answer: {result.error}", file=sys.stderr)
                return
            await asyncio.sleep(max(0.0, args.watch - (loop.time() - started)))
    finally:
        screen.close()
        await prober.close()


# --- scan ----------------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    from gateway.commission.scan import ScanError, check_units, parse_units
    from gateway.commission.target import TargetError, connection_from_args

    _quiet_logs()
    try:
        units = parse_units(args.units)
        connection = connection_from_args(args, 1, args.timeout)
        check_units(units, connection)
    except (TargetError, ValueError) as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(_scan(args, connection, units))
    except ScanError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scan: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if result.found else EXIT_NO_ANSWER


async def _scan(args: argparse.Namespace, connection: Any, units: list[int]) -> Any:
    from gateway.commission.scan import render, scan
    from gateway.commission.target import describe_line
    from gateway.commission.terminal import Progress

    with Progress("scanning", len(units)) as progress:
        result = await scan(connection, units, table=args.table, register=args.register,
                            count=args.count, progress=progress)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(render(result, describe_line(connection)))
    return result


# --- tail ----------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    from gateway.cli_ops import _data_dir, _utf8_output
    from gateway.commands.local import socket_path
    from gateway.commission.tail import follow, tail_request

    _utf8_output()
    body = tail_request(args.device, args.point, args.system,
                        readings=not args.events_only, events=not args.readings_only)
    return follow(socket_path(_data_dir(args)), body, as_json=args.json)


# --- parser --------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, add: Any) -> None:
    """Add probe, scan and tail to `gateway`'s parser; `add` gives a command -c/--config."""
    from gateway.commission.target import add_line_options

    probe = add("probe", cmd_probe, "read a device once (or every few seconds with --watch): "
                                    "values, quality and the raw registers")
    probe.add_argument("device", nargs="?", help="a device of the site config, e.g. pump_b1_1")
    probe.add_argument("--profile", metavar="FILE",
                       help="with --tcp/--rtu/--rtu-over-tcp: the device map to read it with")
    add_line_options(probe, required=False)
    probe.add_argument("--unit", type=int, help="Modbus unit id (default 1, or the config's)")
    probe.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                       help="per request (default: the device's, or 1 s TCP / 0.5 s RTU)")
    probe.add_argument("--watch", nargs="?", const=2.0, type=_seconds, metavar="SECONDS",
                       help="read again every SECONDS (default 2) until Ctrl-C")
    probe.add_argument("--wait", type=_seconds, default=10.0, metavar="SECONDS",
                       help="MQTT devices: how long to wait for their messages (default 10)")
    probe.add_argument("--local", metavar="HOST:PORT",
                       help="BACnet devices: local address to send from (default: the site's "
                            "bacnet.address; use another port while the gateway runs)")
    probe.add_argument("--json", action="store_true", help="one JSON object per round")

    scan = sub.add_parser("scan", help="find the Modbus unit ids that answer on a line",
                          description="Try each unit id with one small read; list those "
                                      "that answered (a Modbus exception is an answer).")
    scan.add_argument("protocol", choices=("modbus",))
    add_line_options(scan, required=True)
    scan.add_argument("--units", default="1-247", metavar="IDS",
                      help="unit ids to try, e.g. 1-247 (default) or 1,3,10-20")
    scan.add_argument("--register", type=int, default=0, metavar="ADDRESS",
                      help="the address read (default 0)")
    scan.add_argument("--table", choices=("holding", "input", "coil", "discrete"),
                      default="holding", help="the table read (default holding)")
    scan.add_argument("--count", type=int, default=1, choices=range(1, 126), metavar="N",
                      help="registers or bits read (default 1)")
    scan.add_argument("--timeout", type=_seconds, default=0.2, metavar="SECONDS",
                      help="how long each id may take to answer (default 0.2)")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=cmd_scan)

    tail = add("tail", cmd_tail, "follow the running gateway's readings and events as they happen")
    tail.add_argument("--device", action="append", default=[], metavar="ID",
                      help="only this device (repeatable; shell patterns such as 'pump_*')")
    tail.add_argument("--point", action="append", default=[], metavar="NAME",
                      help="only readings of this point (repeatable; patterns allowed)")
    tail.add_argument("--system", action="append", default=[], metavar="SYSTEM",
                      help="only devices of this system, e.g. water_supply (repeatable)")
    only = tail.add_mutually_exclusive_group()
    only.add_argument("--events-only", action="store_true", help="alarms, tickets, status")
    only.add_argument("--readings-only", action="store_true")
    tail.add_argument("--data-dir", help="the running gateway's data dir, where control.sock "
                                         "is (default: data_dir from site.yaml)")
    tail.add_argument("--json", action="store_true", help="the stream's JSON lines")
