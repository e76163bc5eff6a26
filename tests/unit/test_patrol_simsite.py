"""The simulator's patrol readers (scripts/simsite/mqtt/patrol.py): guards swipe the site's
cards often enough for every round, what they publish decodes as the gateway reads it,
and `patrol_skipped` leaves the checkpoint out until it is cleared."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from drivers.mqtt import Message, compile_topics
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from simsite.dynamics import FAULTS  # noqa: E402
from simsite.mqtt.device import make_mqtt_device  # noqa: E402
from simsite.mqtt.patrol import VISIT_EVERY_S, PatrolReader  # noqa: E402

T0 = 1_795_392_000.0


@pytest.fixture(scope="module")
def config() -> SiteConfig:
    return load_site(ROOT / "config" / "site.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def reader(config: SiteConfig, clock: Clock) -> PatrolReader:
    from zoneinfo import ZoneInfo

    cards = [c for g in config.patrols.guards for c in g.cards]
    return PatrolReader(config.profiles["patrol_reader"], random.Random(3), heartbeat=600.0,
                        zone=ZoneInfo(config.site.timezone), cards=cards, clock=clock)


def swipes(model: PatrolReader, clock: Clock, hours: float) -> list[dict]:
    """The swipes published over `hours` of the wall clock, polled every minute."""
    out = []
    end = clock.now + hours * 3600
    while clock.now < end:
        clock.now += 60
        out += [json.loads(m.payload) for m in model.due() if m.topic == "events/patrol"]
    return out


def test_guards_swipe_every_checkpoint_more_often_than_a_round_lasts(config: SiteConfig) -> None:
    clock = Clock()
    model = reader(config, clock)
    seen = swipes(model, clock, 12)

    assert VISIT_EVERY_S * 1.3 < 3 * 3600  # even the slowest guard comes once a 3 h round
    assert 12 * 3600 / (VISIT_EVERY_S * 1.3) <= len(seen) <= 12 * 3600 / (VISIT_EVERY_S * 0.7) + 1
    assert {s["card"]["no"] for s in seen} <= {c for g in config.patrols.guards for c in g.cards}


def test_a_swipe_decodes_as_the_gateway_reads_the_profile(config: SiteConfig) -> None:
    device = next(d for d in config.devices if d.profile == "patrol_reader")
    profile = config.profiles["patrol_reader"]
    clock = Clock()
    sim = make_mqtt_device(device, profile, random.Random(1), config.site.timezone, cards=["5B21C0D4"])
    assert sim is not None
    sim.model.clock = clock
    sim.model.set_fault("patrol_skipped")
    sim.model.clear()  # the guard sent at once: one swipe queued
    [swipe] = [m for m in sim.model.due() if m.topic == "events/patrol"]
    [plan] = [p for p in compile_topics(device, profile) if p.filter.endswith("events/patrol")]

    decoded = {d.name: d.decode(Message(swipe.payload)) for d in plan.decoders}
    assert decoded == {"card_no": "5B21C0D4"}
    assert swipe.retain is False  # a swipe is an event: a retained one would be a visit again


def test_patrol_skipped_leaves_the_checkpoint_out_until_cleared(config: SiteConfig) -> None:
    clock = Clock()
    model = reader(config, clock)
    assert "patrol_skipped" in model.faults and "patrol_skipped" in FAULTS

    model.set_fault("patrol_skipped")
    assert swipes(model, clock, 5) == []
    model.clear()
    assert len(swipes(model, clock, 1 / 60)) == 1  # the guard comes at once
