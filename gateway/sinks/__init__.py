"""Sinks: where committed outbox records go (InfluxDB, local history, MQTT upstream)."""
