"""Builds the configured sinks; the only place that knows every sink class."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

from gateway.catalog import Catalog
from gateway.config.models import HistorySinkConfig, InfluxSinkConfig, MqttSinkConfig, SiteConfig
from gateway.sinks.base import Sink


def default_client_id(config: SiteConfig, sink: MqttSinkConfig | None = None) -> str:
    """Unique per gateway on a shared broker: the site id and the gateway id (the machine's
    name unless configured), so two gateways of one site never take each other's session."""
    upstream = sink or config.upstream
    gateway = gateway_id(upstream) if upstream is not None else socket.gethostname()
    suffix = "" if sink is None or sink is config.upstream else f"-{sink.name}"
    return client_id_of(config.site.id, gateway, suffix)


def client_id_of(site: str, gateway: str, suffix: str = "") -> str:
    """The MQTT client id of a gateway's connection: `<site>-<gateway>[-<sink>]`, at most 64."""
    return f"{site}-{gateway}{suffix}"[:64]


def config_hash(config: SiteConfig) -> str:
    """"sha256:<hex>" of the loaded configuration as canonical JSON (sorted keys, no spaces).

    Profiles and devices are included; secrets' values and file locations are not (they
    are excluded from the models' dumps), so the hash changes when what the gateway does
    changes and can be shown to the platform without revealing anything.
    """
    data = config.model_dump(mode="json")
    data["profiles"] = {k: p.model_dump(mode="json") for k, p in sorted(config.profiles.items())}
    data["devices"] = sorted(
        (d.model_dump(mode="json") for d in config.devices), key=lambda d: d["id"]
    )
    data["rule_files"] = [f.model_dump(mode="json") for f in config.rule_files]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def gateway_id(upstream: MqttSinkConfig) -> str:
    """This gateway's topic level under its site: upstream.gateway_id, else the host name.

    One function so the upstream topics and the commands topic can never disagree.
    """
    return upstream.gateway_id or socket.gethostname()


def build_sinks(config: SiteConfig, catalog: Catalog, data_dir: Path) -> list[tuple[Sink, float]]:
    """Every sink with the time it may linger for a fuller batch.

    Each sink's module is imported only when a sink of its type is configured: the
    InfluxDB sink brings aiohttp (about 8 MiB and 0.1 s), which a site without one
    must not pay for.
    """
    sinks: list[tuple[Sink, float]] = []
    started = time.time()
    for sink_config in config.all_sinks():
        if isinstance(sink_config, InfluxSinkConfig):
            from gateway.sinks.influx import InfluxSink

            sinks.append((InfluxSink(sink_config, catalog), sink_config.flush_interval))
        elif isinstance(sink_config, HistorySinkConfig):
            from gateway.sinks.history import HistorySink

            # half a second of readings a transaction, written between polls rather than
            # beside every commit, where its thread would compete with the upstream path
            sinks.append((HistorySink(sink_config, data_dir), 0.5))
        elif isinstance(sink_config, MqttSinkConfig):
            from gateway.sinks.mqtt import MqttSink

            client_id = sink_config.client_id or default_client_id(config, sink_config)
            sink = MqttSink(
                sink_config, catalog, client_id=client_id, gateway_id=gateway_id(sink_config),
                config_hash=config_hash(config), started=started,
            )
            sinks.append((sink, 0.0))
    names = [sink.name for sink, _ in sinks]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"sink names must be unique; used twice: {', '.join(sorted(duplicates))}")
    return sinks
