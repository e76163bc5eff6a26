"""Alarms with the ISA-18.2 / IEC 62682 life cycle, driven by the rule engine.

    alarm = Alarm(AlarmDefinition("pump_b1_1.low_outlet_pressure", "pump_b1_1", "major",
                                  "出水压力低 {outlet_pressure:.2f} MPa", on_delay=30))
    events = alarm.update(now, when.holds(context), {"outlet_pressure": 0.12})
    events += alarm.tick(now)                     # timers, without a new value
    store.save([alarm])                           # after each batch of changes

The state machine is in `lifecycle.py`, its words in `model.py`, message templates in
`message.py`, persistence in `store.py`; docs/rules.md ("Alarms") describes the states.
"""

from rules.alarms.lifecycle import Alarm
from rules.alarms.message import check_template, render_message
from rules.alarms.model import (
    AlarmDefinition,
    AlarmError,
    AlarmEvent,
    AlarmState,
    EventType,
    Severity,
)
from rules.alarms.store import AlarmStore

__all__ = [
    "Alarm", "AlarmDefinition", "AlarmError", "AlarmEvent", "AlarmState", "AlarmStore",
    "EventType", "Severity", "check_template", "render_message",
]
