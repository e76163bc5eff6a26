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
"""
