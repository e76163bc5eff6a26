"""Builds the configured sinks; the only place that knows every sink class."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.catalog import Catalog
from gateway.config.models import HistorySinkConfig, InfluxSinkConfig, MqttSinkConfig, SiteConfig
from gateway.sinks.base import Sink


def default_client_id(config: SiteConfig) -> str:
    """Unique per gateway on a shared broker: the site id and this machine's name."""
    return f"{config.site.id}-{socket.gethostname()}"[:64]


def build_sinks(config: SiteConfig, catalog: Catalog, data_dir: Path) -> list[tuple[Sink, float]]:
    """Every sink with the time it may linger for a fuller batch."""
    from gateway.sinks.history import HistorySink
    from gateway.sinks.influx import InfluxSink
    from gateway.sinks.mqtt import MqttSink

    sinks: list[tuple[Sink, float]] = []
    for sink_config in config.all_sinks():
        if isinstance(sink_config, InfluxSinkConfig):
            sinks.append((InfluxSink(sink_config, catalog), sink_config.flush_interval))
        elif isinstance(sink_config, HistorySinkConfig):
            sinks.append((HistorySink(sink_config, data_dir), 0.0))
        elif isinstance(sink_config, MqttSinkConfig):
            client_id = sink_config.client_id or default_client_id(config)
            sinks.append((MqttSink(sink_config, catalog, client_id=client_id), 0.0))
    names = [sink.name for sink, _ in sinks]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"sink names must be unique; used twice: {', '.join(sorted(duplicates))}")
    return sinks
