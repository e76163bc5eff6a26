"""Guard patrols (巡更): checkpoints visited, rounds judged, missed checkpoints alarmed.

    stage = PatrolStage(config, data_dir, clock=clock, alarms=rule_engine)
    out = stage.open()                  # rounds that ended while down are judged now
    out += stage.process(batch)         # a checkpoint device's reading: visits
    out += stage.tick()                 # a round's end: patrol_round, KPI batch, alarms
    stage.compliance(start, end)        # per plan: rounds, checkpoints, misses, rate
    read_compliance(data_dir, start, end)   # the same from patrol.db, no gateway needed

Modules, one job each: `plan.py` (round windows in the site's time zone), `visits.py`
(visits out of readings), `judge.py` (a round's judgement), `store.py` (patrol.db and
compliance), `events.py` (patrol_round, the KPI batch, alarm ids and messages),
`stage.py` (the stage). docs/patrols.md describes the configuration and the rules.
"""

from gateway.patrol.stage import PatrolStage
from gateway.patrol.store import read_compliance

__all__ = ["PatrolStage", "read_compliance"]
