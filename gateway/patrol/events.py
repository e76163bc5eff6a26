"""What the patrol stage puts in the outbox, in the contract's words (docs/upstream.md):

- Event `patrol_round` per judged round (on `…/events/patrol_round`), again with
  `amended: true` when a late visit changed the judgement;
- a Batch of the plan's KPI device `patrol.<plan>` per judged round, stamped at the
  round's start, so compliance reaches InfluxDB (a re-judged round writes the same
  series and time again: InfluxDB keeps the newer values);
- the alarm of a missed checkpoint, `patrol.<plan>.<checkpoint>` (raised through the
  rule engine, so it has the alarm life cycle).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.batch import Batch, Event
from gateway.patrol.judge import RoundResult
from gateway.sinks.contract import iso_utc

PATROL_ROUND = "patrol_round"
OWNER = "patrol"  # the rule engine's owner name of the missed-checkpoint alarms
# Points of a plan's KPI device, one batch per judged round.
KPI_POINTS = ("round_expected", "round_visited", "round_done", "compliance_30d")
COMPLIANCE_DAYS = 30


def kpi_device(plan: str) -> str:
    return f"patrol.{plan}"


def alarm_id(plan: str, checkpoint: str) -> str:
    return f"patrol.{plan}.{checkpoint}"


def round_event(result: RoundResult, plan_name: str | None, *, amended: bool = False) -> Event:
    """One judged round: which checkpoints were visited (when, by which guard) and missed."""
    r = result.round
    body: dict[str, Any] = {
        "plan": r.plan,
        "name": plan_name or r.plan,
        "window": r.window,
        "round": r.number,
        "rounds": r.rounds,
        "start": iso_utc(r.start),
        "end": iso_utc(r.end),
        "visited": [{"checkpoint": c, "at": iso_utc(v.ts), "guard": v.guard}
                    for c, v in sorted(result.visited.items(), key=lambda item: item[1].ts)],
        "missed": list(result.missed),
        "done": result.done,
        "rate": (len(result.expected) - len(result.missed)) / len(result.expected),
    }
    if result.out_of_order:
        body["out_of_order"] = list(result.out_of_order)
    if amended:
        body["amended"] = True
    return Event(PATROL_ROUND, r.end, None, body)


def kpi_batch(result: RoundResult, compliance_30d: float | None) -> Batch:
    """The round's numbers as readings of the plan's KPI device."""
    expected = len(result.expected)
    visited = expected - len(result.missed)
    return Batch(kpi_device(result.round.plan), result.round.start, KPI_POINTS,
                 [expected, visited, int(result.done), compliance_30d])


def missed_message(result: RoundResult, checkpoint: str, checkpoint_name: str,
                   plan_name: str, zone: ZoneInfo) -> str:
    """巡更漏检: 设备房巡更 B1水泵房 未在 08:00-12:00 打卡 (day 第1/3轮)."""
    r = result.round
    start = datetime.fromtimestamp(r.start, zone).strftime("%H:%M")
    end = datetime.fromtimestamp(r.end, zone).strftime("%H:%M")
    how = "未按规定顺序打卡" if checkpoint in result.out_of_order else "未打卡"
    return (f"巡更漏检: {plan_name} {checkpoint_name} {r.day.isoformat()} {start}-{end} {how} "
            f"({r.window} 第{r.number}/{r.rounds}轮)")
