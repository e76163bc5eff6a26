"""The `gateway` command: run the daemon, check a config, list points, read local history."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# `logs` first: it imports structlog before anything else does, without rich (see there)
from gateway import __version__, logs
from gateway.config.models import parse_duration
from gateway.textable import format_table

DEFAULT_CONFIGS = ("/etc/gateway/site.yaml", "config/site.yaml")
RELOAD_WAIT = 90.0  # seconds: the daemon gives a reload 60 s, after any command in flight


def default_config() -> str:
    """$GATEWAY_CONFIG, else the system-wide config if installed, else the example site."""
    if env := os.environ.get("GATEWAY_CONFIG"):
        return env
    for candidate in DEFAULT_CONFIGS:
        if Path(candidate).exists():
            return candidate
    return DEFAULT_CONFIGS[-1]


def load_or_exit(path: str):
    """Load the site config; on errors print every one of them and exit 2."""
    from gateway.config.errors import ConfigError
    from gateway.config.loader import load_site

    try:
        return load_site(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        count = len(exc.issues)
        print(f"{count} error{'s' if count != 1 else ''} in the configuration", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as exc:
        print(f"{path}: no such file ({exc.filename}); pass -c PATH or set GATEWAY_CONFIG",
              file=sys.stderr)
        raise SystemExit(2) from None


# --- commands ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import sdnotify
    from gateway.daemon import Gateway
    from gateway.health import health_line

    config = load_or_exit(args.config)
    logs.configure(args.log_level or config.logging.level, args.log_format or config.logging.format)
    _private_data_dir(Path(args.data_dir) if args.data_dir else config.data_dir)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        gateway = Gateway(config, data_dir=Path(args.data_dir) if args.data_dir else None)
        # SIGHUP (systemd's ExecReload): load the files again; an invalid config changes nothing
        reloads: set[asyncio.Task[None]] = set()

        def hang_up() -> None:
            task = loop.create_task(_reload(gateway))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hang_up)
        await gateway.start()
        sdnotify.notify("READY=1")
        supervised = None
        if os.environ.get("NOTIFY_SOCKET"):  # STATUS= health line; WATCHDOG=1 if WatchdogSec=
            supervised = asyncio.create_task(sdnotify.report_forever(
                lambda: health_line(gateway.health_view()), sdnotify.watchdog_interval()))
        live = None
        if args.live:
            from gateway.live import show_forever

            live = asyncio.create_task(show_forever(gateway.pipeline, gateway.catalog))
        try:
            await stop.wait()
        finally:
            sdnotify.notify("STOPPING=1")
            for task in (live, supervised):
                if task is not None:
                    task.cancel()
            await gateway.stop()

    async def _reload(gateway: Gateway) -> None:
        sdnotify.notify(sdnotify.reloading())
        try:
            await gateway.reload_from_source("SIGHUP")
        finally:
            sdnotify.notify("READY=1")

    asyncio.run(main())
    return 0


def _private_data_dir(data_dir: Path) -> None:
    """State and audit files readable by the gateway's user and group only, however it is
    started (systemd's UMask=0027 is the same): files 0640, directories 0750, and a data
    dir made looser by hand tightened, which hides files written before this too."""
    os.umask(0o027)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(data_dir.stat().st_mode & 0o750)
    except OSError as exc:  # not ours to change (a shared mount): say so, run all the same
        import structlog

        structlog.get_logger(__name__).warning(
            "cannot restrict the data dir to mode 0750", path=str(data_dir),
            error=exc.strerror or str(exc))


def cmd_check(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    by_protocol: dict[str, list[int]] = {}
    for device in config.devices:
        profile = config.profiles[device.profile]
        counts = by_protocol.setdefault(device.connection.type, [0, 0])
        counts[0] += 1
        counts[1] += len(profile.points)
    rules = sum(len(p.rules) for p in config.profiles.values())
    print(f"site {config.site.id}: {config.site.name}")
    print(f"profiles: {len(config.profiles)}  rules in profiles: {rules}")
    rows = [(proto, n_dev, n_pts) for proto, (n_dev, n_pts) in sorted(by_protocol.items())]
    print(format_table(("protocol", "devices", "points"), rows))
    # What the rule engine will run: the loader has checked every rule, so this compiles.
    from rules.compile import compile_rules

    compiled = compile_rules(config)
    site_rules = sum(len(f.rules) for f in config.rule_files)
    running = compiled.rules
    print(f"site rule files: {len(config.rule_files)}  site rules: {site_rules}")
    print(f"rules running on devices: {len(running)}  "
          f"derived points: {sum(r.derive is not None for r in running)}  "
          f"alarms: {sum(r.rule.alarm is not None for r in running)}  "
          f"raising tickets: {sum(r.rule.ticket is not None for r in running)}")
    written = (sum(len(p.maintenance) for p in config.profiles.values())
               + sum(len(f.maintenance) for f in config.rule_files))
    device_ids = {d.id for d in config.devices}
    on_devices = [p for p in compiled.plans if p.device in device_ids]
    on_assets = [p for p in compiled.plans if p.device not in device_ids]
    print(f"maintenance tasks: {written} written, {len(compiled.plans)} planned: "
          f"{len(on_devices)} for {len({p.device for p in on_devices})} devices, "
          f"{len(on_assets)} for {len({p.device for p in on_assets})} assets")
    sinks = [(s.name, s.type, _sink_target(s)) for s in config.all_sinks()]
    print(format_table(("sink", "type", "target"), sinks))
    print("configuration OK")
    return 0


def _sink_target(sink) -> str:
    if sink.type == "influxdb":
        where = sink.bucket if sink.api == "v2" else sink.database
        return f"{sink.url} ({sink.api}: {where})"
    if sink.type == "mqtt":
        return f"{sink.host}:{sink.port} prefix {sink.topic_prefix}"
    return "local history"


def cmd_points(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    devices = [d for d in config.devices if args.device in (None, d.id)]
    if args.device and not devices:
        print(f"no device {args.device!r}; devices: {', '.join(d.id for d in config.devices)}",
              file=sys.stderr)
        return 2
    if args.plan:
        from drivers.modbus.plan import compile_plans, describe_plans

        for device in devices:
            if not device.connection.type.startswith("modbus"):
                print(f"{device.id} ({device.connection.type}): no request plan; "
                      "see `gateway points` for its points")
                continue
            plans = compile_plans(device, config.profiles[device.profile])
            points = sum(len(p.points) for p in plans.values())
            requests = sum(len(p.requests) for p in plans.values())
            print(f"{device.id} ({device.connection.type}, unit {device.connection.unit}): "
                  f"{_count(points, 'point')} in {_count(requests, 'request')} per round")
            for line in describe_plans(plans):
                print(f"  {line}")
        return 0
    rows = []
    for device in devices:
        profile = config.profiles[device.profile]
        for name, point in profile.points.items():
            rows.append((
                device.id, name, point.name, _where(point), _kind(point, profile),
                _fmt_scale(point.scale, point.offset), point.unit,
                "rw" if point.writable else "r",
            ))
    headers = ("device", "point", "name", "where", "type", "scale", "unit", "access")
    if args.json:
        print(json.dumps([dict(zip(headers, r, strict=True)) for r in rows], ensure_ascii=False))
    else:
        print(format_table(headers, rows))
    return 0


def _where(point) -> str:
    """Where a point lives on its device: a register (and bit) or a BACnet object property."""
    if hasattr(point, "object"):
        prop = "" if point.property == "present-value" else f" {point.property}"
        return f"{point.object}{prop}" + (" (cov)" if point.cov else "")
    if hasattr(point, "topic"):
        return f"{point.topic or '.'} {point.path or ''}".strip()
    bit = f".{point.bit}" if point.bit is not None else ""
    return f"{point.table} {point.address}{bit}"


def _kind(point, profile) -> str:
    if hasattr(point, "object"):
        return "enum" if point.enum else "bacnet"
    if hasattr(point, "topic"):
        return point.type
    order = point.order or profile.order
    return point.type if point.type in ("bool", "int16", "uint16", "bcd16") else f"{point.type} {order}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt_scale(scale: float, offset: float) -> str:
    text = f"×{scale:g}"
    return text + (f" {offset:+g}" if offset else "")


def cmd_history(args: argparse.Namespace) -> int:
    from gateway.sinks.history import HistoryReader

    config = load_or_exit(args.config)
    data_dir = Path(args.data_dir) if args.data_dir else config.data_dir
    path = data_dir / "history.db"
    if not path.exists():
        print(f"no local history at {path} yet; is the gateway running with this data dir?",
              file=sys.stderr)
        return 1
    reader = HistoryReader(path)
    since = time.time() - parse_duration(args.since) if args.since else None
    rows = reader.query(args.device, args.point, since=since, limit=args.limit)
    if args.json:
        print(json.dumps([r._asdict() for r in rows], ensure_ascii=False))
        return 0
    table = [
        (datetime.fromtimestamp(r.ts, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S"),
         r.device, r.point, r.value, r.quality)
        for r in rows
    ]
    print(format_table(("time", "device", "point", "value", "quality"), table))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The running gateway's status file: health first, then devices, sinks, outbox."""
    from gateway.daemon import STATUS_FILE
    from gateway.health import health_line

    path = _data_dir_of(args) / STATUS_FILE
    if not path.exists():
        print(f"no status at {path}; is the gateway running with this data dir?", file=sys.stderr)
        return 1
    status = json.loads(path.read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps(status, ensure_ascii=False))
        return 0
    now = time.time()
    age = now - status["ts"]
    stale = "" if age < 30 else f"  (written {age:.0f} s ago: the gateway may have stopped)"
    print(f"site {status['site']}, gateway pid {status['pid']}{stale}")
    if status.get("health"):
        print(f"health: {health_line(status['health'])}")
    if status.get("reload"):
        print(_reload_line(status["reload"]))
    rows = []
    for device, d in sorted(status["devices"].items()):
        req = d.get("requests") or {}
        errors = ", ".join(f"{k} {v}" for k, v in sorted((req.get("errors") or {}).items()))
        last_good = f"{now - d['last_good']:.0f}s ago" if d.get("last_good") else "never"
        online = {True: "online", False: "OFFLINE", None: "starting"}[d.get("online")]
        rows.append((device, online, d.get("polls"), d.get("failures"), req.get("requests"),
                     errors or "-", _ms(req.get("mean_latency_ms")), last_good))
    print(format_table(("device", "state", "polls", "failed", "requests", "errors",
                        "latency", "last good"), rows))
    sinks = [(s["sink"], s["behind"], _seconds(s.get("oldest_unconfirmed_age")), s["delivered"],
              s["failures"], s["last_error"] or "-") for s in status["sinks"]]
    print(format_table(("sink", "behind", "oldest", "delivered", "failures", "last error"), sinks))
    box = status["outbox"]
    print(f"outbox: seq {box['committed_seq']}, {box['size_bytes'] / 1e6:.1f} MB, "
          f"{box['dropped_readings']} readings dropped")
    if status.get("metrics"):
        print(f"metrics: http://{status['metrics']}/metrics")
    return 0


def _reload_line(reload: dict) -> str:
    """The applied configuration's hash, and how reloads went."""
    applied = reload.get("applied_at")
    when = datetime.fromtimestamp(applied).strftime("%Y-%m-%d %H:%M:%S") if applied else "?"
    line = (f"config {str(reload.get('config_hash') or '-')[:19]} since {when}; "
            f"reloads: {reload.get('applied', 0)} applied, {reload.get('failed', 0)} failed")
    for error in (reload.get("errors") or [])[:5]:
        line += f"\n  last reload failed: {error}"
    return line


def _seconds(value: float | None) -> str:
    return "-" if not value else f"{value:.0f} s"


def _data_dir_of(args: argparse.Namespace) -> Path:
    """--data-dir, else site.yaml's data_dir (beside it when relative), read without
    validating the rest: status and reload must work while the files have an error."""
    if args.data_dir:
        return Path(args.data_dir)
    import yaml

    site = Path(args.config)
    try:
        data = yaml.safe_load(site.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return load_or_exit(args.config).data_dir  # prints what is wrong and exits
    written = Path(str(data.get("data_dir", "data")) if isinstance(data, dict) else "data")
    written = written.expanduser()
    return written if written.is_absolute() else site.parent / written


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running gateway to load its files again, as SIGHUP does, over the control
    socket: audited, and its outcome (or every located error) printed."""
    from gateway.cli_ops import EXIT_REFUSED, EXIT_UNREACHABLE, login_user, new_request_id
    from gateway.commands.local import ControlError, request, socket_path

    by = args.by or login_user()
    command = {"id": new_request_id(), "type": "reload", "by": by}
    try:
        reply = request(socket_path(_data_dir_of(args)), command, timeout=RELOAD_WAIT)
    except ControlError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(reply, ensure_ascii=False))
        return 0 if reply.get("ok") else EXIT_REFUSED
    result = reply.get("result") or {}
    if not reply.get("ok"):
        print(f"reload refused, the running configuration carries on: "
              f"{(reply.get('error') or 'no reason given').splitlines()[0]}", file=sys.stderr)
        for error in result.get("errors") or []:
            print(f"  {error}", file=sys.stderr)
        return EXIT_REFUSED
    restarted = result.get("restarted") or []
    print(f"reloaded ({str(result.get('config_hash') or '')[:19]}): "
          f"{len(restarted)} device{'s' if len(restarted) != 1 else ''} restarted"
          + (f" ({', '.join(restarted)})" if restarted else "")
          + f", added {len(result.get('added') or [])}, removed {len(result.get('removed') or [])}"
          + f"; {result.get('devices')} devices running")
    for line in result.get("lines_rebuilt") or []:
        print(f"  line reopened: {line}")
    if result.get("restart_needed"):
        print(f"  takes effect at the next restart: {', '.join(result['restart_needed'])}")
    return 0


def _ms(milliseconds: float | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds:.1f} ms"


def cmd_audit(args: argparse.Namespace) -> int:
    """The command audit log; --verify checks its hash chain (exit 1 when broken)."""
    from gateway.commands.audit import AUDIT_FILE, read_entries, verify

    data_dir = Path(args.data_dir) if args.data_dir else load_or_exit(args.config).data_dir
    path = data_dir / AUDIT_FILE
    if not path.exists():
        print(f"no audit log at {path}; no command has reached this gateway yet", file=sys.stderr)
        return 1
    if args.verify:
        problems = verify(path)
        if args.json:
            print(json.dumps({"path": str(path), "ok": not problems, "problems": problems},
                             ensure_ascii=False))
        else:
            for problem in problems:
                print(f"{path}: {problem}")
            entries = len(read_entries(path))
            print(f"{path}: {entries} entries, " + (
                "hash chain intact" if not problems
                else f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"))
        return 1 if problems else 0
    entries = read_entries(path)
    if args.json:
        print(json.dumps(entries, ensure_ascii=False))
        return 0
    rows = [(e.get("seq"), e.get("ts"), e.get("who"), e.get("id"), e.get("type"), e.get("target"),
             json.dumps(e.get("value"), ensure_ascii=False) if e.get("value") is not None else "-",
             e.get("outcome"), (e.get("reason") or "-").splitlines()[0])
            for e in entries]
    print(format_table(("seq", "time (UTC)", "who", "request", "type", "target", "value",
                        "outcome", "reason"), rows))
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """Who-Is, then each device's objects; a table, JSON, or profile and device files."""
    from drivers.bacnet.discover import (
        DiscoveryError,
        run_discovery,
        summary_rows,
        write_site_files,
    )

    local, instance = args.local, 4194300
    if args.config:
        site = load_or_exit(args.config)
        local, instance = local or site.bacnet.address, site.bacnet.device_instance
    low, high = args.range or (None, None)
    progress = _progress_bar if sys.stderr.isatty() and not args.json else None
    try:
        devices = asyncio.run(run_discovery(
            local or "0.0.0.0:47808", instance, addresses=args.address, low=low, high=high,
            timeout=args.timeout, progress=progress,
        ))
    except DiscoveryError as exc:
        print(f"discover: {exc}", file=sys.stderr)
        return 1
    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(d) for d in devices], ensure_ascii=False, indent=1))
    else:
        print(format_table(("instance", "address", "name", "vendor / model", "objects", "notes"),
                           summary_rows(devices)))
    if not devices:
        print("no device answered; try --address HOST:PORT for devices broadcasts do not reach",
              file=sys.stderr)
        return 1
    if args.write:
        try:
            written = write_site_files(Path(args.write), devices, force=args.force)
        except FileExistsError as exc:
            print(f"discover: not overwriting {exc}; pass --force to replace", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
    return 0


def _progress_bar(done: int, total: int, what: str) -> None:
    """One line on stderr, redrawn: a long scan shows it is moving."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(f"\r{what[:24]:<24} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} objects",
          end=end, file=sys.stderr, flush=True)


def _instance_range(text: str) -> tuple[int, int]:
    """LOW-HIGH device instances for --range."""
    low, sep, high = text.partition("-")
    if not (sep and low.strip().isdigit() and high.strip().isdigit()) or int(low) > int(high):
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH, e.g. 1000-2999")
    return int(low), int(high)


# --- parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Site gateway for property management: poll, store, deliver."
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("-c", "--config", default=default_config(),
                         help="site.yaml (default: $GATEWAY_CONFIG, /etc/gateway/site.yaml, "
                              "config/site.yaml)")
        cmd.set_defaults(func=func)
        return cmd

    run = add("run", cmd_run, "run the gateway daemon until SIGTERM or Ctrl-C")
    run.add_argument("--data-dir", help="where the outbox and local history live "
                                        "(default: data_dir from site.yaml)")
    run.add_argument("--live", action="store_true", help="print the latest values every 2 s")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-format", choices=("auto", "console", "json"))

    add("check", cmd_check, "validate the configuration without touching any device")

    status = add("status", cmd_status, "health, devices, sinks and outbox of the running gateway")
    status.add_argument("--data-dir")
    status.add_argument("--json", action="store_true")

    reload = add("reload", cmd_reload, "load the configuration files again in the running "
                                       "gateway (invalid ones change nothing)")
    reload.add_argument("--data-dir", help="the running gateway's data dir, where control.sock "
                                           "is (default: data_dir from site.yaml)")
    reload.add_argument("--by", metavar="NAME",
                        help="who reloads, for the audit log (default: your login name)")
    reload.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")

    points = add("points", cmd_points, "list the resolved points of every device, or one")
    points.add_argument("device", nargs="?")
    points.add_argument("--plan", action="store_true",
                        help="show the requests each poll issues (merged reads)")
    points.add_argument("--json", action="store_true")

    history = add("history", cmd_history, "recent values from the local history")
    history.add_argument("device")
    history.add_argument("point", nargs="?")
    history.add_argument("--since", help="how far back, e.g. 10m, 2h, 1d")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--data-dir")
    history.add_argument("--json", action="store_true")

    audit = add("audit", cmd_audit, "the audit log of the platform's commands")
    audit.add_argument("--verify", action="store_true",
                       help="check the hash chain: exit 1 if a line was edited, inserted or deleted")
    audit.add_argument("--data-dir", help="where audit.jsonl lives (default: data_dir from site.yaml)")
    audit.add_argument("--json", action="store_true")

    from gateway.cli_ops import register as register_ops  # alarms, ack, shelve, tickets, ...

    register_ops(sub, add)

    from gateway.energy.ledger_cli import register as register_energy  # meters, ledger

    register_energy(sub, add)

    from gateway.equipment.cli import register as register_equipment  # equipment, report

    register_equipment(sub, add)

    from gateway.commission.cli import register as register_commission  # probe, scan, tail

    register_commission(sub, add)

    discover = sub.add_parser("discover", help="find devices and write their device maps",
                              description="Who-Is, read each device's objects, print them; "
                                          "--write makes profiles and device files")
    discover.add_argument("protocol", choices=("bacnet",))
    discover.add_argument("-c", "--config", default=None,
                          help="site.yaml whose bacnet: address and instance discovery uses")
    discover.add_argument("--range", metavar="LOW-HIGH", type=_instance_range,
                          help="only device instances in this range, e.g. 1000-2999")
    discover.add_argument("--address", action="append", default=[], metavar="HOST:PORT",
                          help="send a directed Who-Is here (repeatable); default: broadcast")
    discover.add_argument("--local", metavar="HOST:PORT",
                          help="local address to send from (default: the site's bacnet.address, "
                               "else 0.0.0.0:47808)")
    discover.add_argument("--timeout", type=float, default=3.0,
                          help="seconds to wait for I-Am answers (default 3)")
    discover.add_argument("--write", metavar="DIR",
                          help="write DIR/profiles/<model>.yaml and DIR/devices/<device>.yaml")
    discover.add_argument("--force", action="store_true", help="overwrite existing files")
    discover.add_argument("--json", action="store_true")
    discover.set_defaults(func=cmd_discover)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
