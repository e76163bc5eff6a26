"""Run a simulated site until Ctrl-C: `python scripts/simsite --config config/site.yaml`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/simsite`: make simsite and gateway importable
    _scripts = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(_scripts), str(_scripts.parent)]

from simsite.dynamics import COMM_FAULTS  # noqa: E402
from simsite.scenarios import Scenario, check, parse_scenario, play  # noqa: E402
from simsite.server import SimulatedSite  # noqa: E402

SCENARIO_HELP = f"""\
scenarios (--scenario KIND[@WHEN]:DEVICE, repeatable; WHEN is real time after start):
  pump_trip        booster pump: the drive trips (motor overload), pressure falls
  low_pressure     booster pump: full speed, outlet pressure under 0.2 MPa (burst main)
  elevator_stuck   elevator: stopped between floors, doors closed, alarm button, trapped
  fire_alarm       fire panel: zone 3 in fire alarm, panel fire flag, linkage started
  sump_high        sump: inflow beyond both pumps, the level climbs to the high float
  door_forced      door IO or access controller: door open without a lock release
  meter_silent     any meter: connections accepted, nothing answered
  water_leak       water main: a constant leak only the main counts (its sub-meters do
                   not): the group's loss rate climbs, the night minimum flow rises
  fan_fail         AHU (BACnet): fan commanded on, status stays off, alarm state 风机故障
  filter_clogged   AHU: filter differential pressure climbs past 250 Pa
  supply_drift     AHU or heat-exchange station: supply temperature drifts off setpoint
  door_held        access controller (MQTT): door wedged open past its held-open time
  card_denied_burst  access controller: a blacklisted card tried again and again
  emergency_call   emergency button (MQTT): pressed, repeated until cleared
  lift_trapped     elevator IoT box (MQTT): stopped between floors, passenger trapped
  patrol_skipped   patrol reader (MQTT): guards leave this checkpoint out of their rounds
                   (the round ends with it missed: alarm); clear sends a guard at once
  device_silent, malformed, flood
                   any MQTT device: stops publishing / bad JSON now and then / 100 msg/s
  {", ".join(COMM_FAULTS)}
                   any device: server closed / nothing answered / Modbus exceptions
  clear            end the device's fault (the lift is rescued, the panel reset...)

example:
  python -m simsite --scenario elevator_stuck@30s:lift_b1_1 --scenario clear@3m:lift_b1_1
"""


def _scenario(text: str) -> Scenario:
    try:
        return parse_scenario(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="simsite", description="Serve a site's devices (Modbus TCP, BACnet/IP, MQTT) from simulated equipment.",
        epilog=SCENARIO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", default="config/site.yaml", help="site.yaml to simulate")
    parser.add_argument("--seed", type=int, default=None, help="make the noise repeatable")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="simulated seconds per real second (default 60: an hour a minute)")
    parser.add_argument("--tick", type=float, default=0.5, help="register refresh interval, seconds")
    parser.add_argument("--host", default=None, help="listen here instead of each device's host")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pymodbus's own log")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="create this file once every device is serving")
    parser.add_argument("--scenario", type=_scenario, action="append", default=[], metavar="KIND@WHEN:DEVICE",
                        help="play a fault at a time, e.g. elevator_stuck@30s:lift_b1_1 (see below)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> int:
    from gateway.config.errors import ConfigError
    from gateway.config.loader import load_site

    try:
        config = load_site(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"simsite: {args.config}: no such file ({exc.filename})", file=sys.stderr)
        return 2
    site = SimulatedSite(config, args.seed, tick=args.tick, speed=args.speed, host=args.host)
    try:
        check(site, args.scenario)
    except ValueError as exc:
        print(f"simsite: {exc}", file=sys.stderr)
        return 2
    try:
        await site.start()
    except (OSError, RuntimeError) as exc:
        print(f"simsite: cannot serve the site: {exc}", file=sys.stderr)
        return 1
    for sim in site.devices.values():
        conn = sim.device.connection
        if conn.type == "mqtt":
            where = f"MQTT {conn.base_topic}"
        else:
            where = f"unit {conn.unit}" if hasattr(conn, "unit") else f"BACnet device {conn.device_instance}"
        print(f"simsite: {sim.device.id} ({sim.profile.id}) on {sim.host}:{sim.port} {where}")
    for broker in site.brokers:
        print(f"simsite: embedded MQTT broker (amqtt) on {broker.host}:{broker.port}")
    if args.ready_file is not None:
        args.ready_file.parent.mkdir(parents=True, exist_ok=True)
        args.ready_file.touch()
    timeline = asyncio.create_task(play(site, args.scenario, lambda line: print(line, flush=True)))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        timeline.cancel()
        await site.stop()
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not args.verbose:  # a client probing missing registers is normal, not worth a traceback
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
