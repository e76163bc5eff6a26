"""The rule engine: rules evaluated on the points that changed, alarms, tickets, plans.

    engine = RuleEngine(config, data_dir)          # compiles rules (rules/compile.py)
    out = engine.open()                             # restore state; plans due while down
    out += engine.process(batch)                    # a poll: derived batches and events
    out += engine.tick()                            # timers: delays, stale data, SLA clocks
    events = engine.acknowledge("pump_b1_1.low_outlet_pressure", by="张工")
    engine.close()

Outputs are `Batch` (derived points, stored and sent like read ones) and `Event`
(rules/engine/events.py). Commands raise ValueError subclasses (unknown alarm, a step
the state does not allow) whose text is written for the operator.

Modules, one job each: `engine.py` (the calls above), `commands.py` and `views.py` (what
operators do and see), `index.py` (point → rules), `evaluator.py` (running a rule,
failures contained), `derived.py` (derived batches, counters), `alarm_set.py` (which
alarms exist: rule, hidden ticket debouncers, SLA), `tickets.py` (a rule's ticket
request), `plans.py` (SLA policy, schedule entries, usage counters), `maintenance.py`,
`flood.py`, `call.py` (one call's outputs), `stores.py` and `state_store.py`
(persistence), `runner.py` (the timers on APScheduler), `errors.py`.
"""
