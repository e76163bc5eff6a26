"""The benchmark harness behind `scripts/bench`: figures from /proc, generated sites, simulated
Modbus servers, an MQTT subscriber, the gateway (and ThingsBoard IoT Gateway) as processes,
and one module per scenario (`scen_*.py`)."""
