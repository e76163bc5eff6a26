"""Scenarios on a timeline, for `python -m simsite --scenario KIND@WHEN:DEVICE`.

A demo or a commissioning rehearsal needs a fault to happen on cue while the gateway
runs: `elevator_stuck@30s:lift_b1_1` starts that fault 30 seconds (real time) after the
site starts; `clear@5m:lift_b1_1` ends it. Without `@WHEN` the fault starts at once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.models import parse_duration
from simsite.dynamics import FAULTS
from simsite.server import SimulatedSite

CLEAR = "clear"
_SYNTAX = re.compile(r"^(?P<kind>[a-z_]+)(?:@(?P<when>[^:]+))?:(?P<device>[\w.-]+)$")


@dataclass(frozen=True, slots=True)
class Scenario:
    kind: str  # a fault, or "clear"
    at: float  # real seconds after the site started
    device: str

    def __str__(self) -> str:
        return f"{self.kind}@{self.at:g}s:{self.device}"


def parse_scenario(text: str) -> Scenario:
    """`KIND[@WHEN]:DEVICE` as a Scenario; ValueError says what a correct one looks like."""
    match = _SYNTAX.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not KIND@WHEN:DEVICE, e.g. elevator_stuck@30s:lift_b1_1")
    kind = match["kind"]
    if kind != CLEAR and kind not in FAULTS:
        raise ValueError(f"{text!r}: unknown scenario {kind!r}; expected clear or one of {', '.join(FAULTS)}")
    at = parse_duration(match["when"]) if match["when"] else 0.0
    return Scenario(kind, at, match["device"])


def check(site: SimulatedSite, scenarios: list[Scenario]) -> None:
    """Refuse, before anything starts, a scenario for a device the site lacks or cannot play."""
    for scenario in scenarios:
        if scenario.device not in site.devices:
            raise ValueError(f"{scenario}: no device {scenario.device!r}; have {', '.join(site.devices)}")
        if scenario.kind != CLEAR and scenario.kind not in site.faults(scenario.device):
            raise ValueError(
                f"{scenario}: {scenario.device} cannot play {scenario.kind}; it can play "
                + ", ".join(site.faults(scenario.device))
            )


async def play(site: SimulatedSite, scenarios: list[Scenario], report: Callable[[str], None]) -> None:
    """Start each scenario at its time; `report` hears of each one as it starts."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for scenario in sorted(scenarios, key=lambda s: s.at):
        await asyncio.sleep(max(0.0, started + scenario.at - loop.time()))
        if scenario.kind == CLEAR:
            await site.clear(scenario.device)
        else:
            await site.set_fault(scenario.device, scenario.kind)
        report(f"simsite: {scenario.kind} on {scenario.device}")
