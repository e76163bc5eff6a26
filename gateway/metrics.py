"""The local Prometheus endpoint: `metrics: {listen: "127.0.0.1:9108"}` in site.yaml.

Nothing on the hot path is instrumented for it. A collector reads, at scrape time, the
statistics the gateway keeps anyway (each device's poll health and its driver's request
statistics, each sink's runner, the outbox, the rule engine, reloads) and turns them
into metric families. The HTTP server is aiohttp on the gateway's event loop, so a
scrape sees one consistent moment and a blocked loop shows as a scrape timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

import gateway
from rules.alarms import AlarmState

if TYPE_CHECKING:
    from gateway.daemon import Gateway

log = structlog.get_logger(__name__)

SHUTDOWN_TIMEOUT = 0.2  # seconds a scrape in flight may take when the gateway stops


class GatewayCollector:
    """Every gateway metric, read from the running gateway when Prometheus asks."""

    def __init__(self, gw: Gateway) -> None:
        self.gateway = gw

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        yield from self._gateway(now)
        yield from self._devices()
        yield from self._outbox_and_sinks(now)
        yield from self._rules()

    def _gateway(self, now: float) -> Iterator[Metric]:
        gw = self.gateway
        info = GaugeMetricFamily("gateway_info", "The gateway's version and site.",
                                 labels=["version", "site"])
        info.add_metric([gateway.__version__, gw.config.site.id], 1)
        yield info
        health = gw.health_view(now)
        yield GaugeMetricFamily("gateway_healthy", "1 when `gateway status` says OK, "
                                "0 when DEGRADED (the reasons are in `gateway status`).",
                                value=1 if health["state"] == "OK" else 0)
        config = GaugeMetricFamily("gateway_config_info", "The applied configuration's hash.",
                                   labels=["config_hash"])
        config.add_metric([gw.reloads.config_hash or ""], 1)
        yield config
        reloads = CounterMetricFamily("gateway_reloads", "Reloads since start, by outcome: "
                                      "applied, or failed (invalid files, or could not run).",
                                      labels=["outcome"])
        reloads.add_metric(["applied"], gw.reloads.applied)
        reloads.add_metric(["failed"], gw.reloads.failed)
        yield reloads
        disk = gw.disk_usage()
        if disk is not None:
            yield GaugeMetricFamily("gateway_data_dir_free_bytes",
                                    "Bytes free on the data dir's file system.", value=disk[1])
            yield GaugeMetricFamily("gateway_data_dir_size_bytes",
                                    "Size of the data dir's file system.", value=disk[0])

    def _devices(self) -> Iterator[Metric]:
        gw = self.gateway
        polls = CounterMetricFamily("gateway_device_polls", "Polls (one batch each) by outcome.",
                                    labels=["device", "outcome"])
        errors = CounterMetricFamily("gateway_device_poll_errors",
                                     "Failed polls by the kind of failure.",
                                     labels=["device", "kind"])
        online = GaugeMetricFamily("gateway_device_online", "1 online, 0 offline; absent "
                                   "until the first polls settle it.", labels=["device"])
        latency = GaugeMetricFamily("gateway_device_poll_latency_seconds",
                                    "How long the last good poll took.", labels=["device"])
        mean = GaugeMetricFamily("gateway_device_poll_latency_mean_seconds",
                                 "Mean duration of the good polls.", labels=["device"])
        last_good = GaugeMetricFamily("gateway_device_last_good_timestamp_seconds",
                                      "When the device last answered a poll.", labels=["device"])
        requests = CounterMetricFamily("gateway_device_requests",
                                       "Requests the driver sent (Modbus, BACnet).",
                                       labels=["device"])
        request_errors = CounterMetricFamily("gateway_device_request_errors",
                                             "Failed requests by kind.", labels=["device", "kind"])
        stats = {d.device.id: d.stats() for d in gw.drivers}
        for device, health in sorted(gw.health.items()):
            polls.add_metric([device, "ok"], health.polls - health.failures)
            polls.add_metric([device, "failed"], health.failures)
            for kind, count in sorted(health.errors.items()):
                errors.add_metric([device, kind], count)
            if health.online is not None:
                online.add_metric([device], 1 if health.online else 0)
            if health.last_latency is not None:
                latency.add_metric([device], health.last_latency)
            if health.mean_latency is not None:
                mean.add_metric([device], health.mean_latency)
            if health.last_good is not None:
                last_good.add_metric([device], health.last_good)
            driver = stats.get(device) or {}
            if isinstance(driver.get("requests"), int):
                requests.add_metric([device], driver["requests"])
            for kind, count in sorted((driver.get("errors") or {}).items()):
                if isinstance(count, int):
                    request_errors.add_metric([device, str(kind)], count)
        yield from (polls, errors, online, latency, mean, last_good, requests, request_errors)

    def _outbox_and_sinks(self, now: float) -> Iterator[Metric]:
        gw = self.gateway
        stats = gw.outbox.stats
        yield CounterMetricFamily("gateway_outbox_records", "Records committed to the outbox "
                                  "(its sequence number).", value=stats.committed_seq)
        yield GaugeMetricFamily("gateway_outbox_size_bytes", "Live data in outbox.db.",
                                value=stats.size_bytes)
        yield GaugeMetricFamily("gateway_outbox_max_size_bytes", "outbox.max_size.",
                                value=gw.outbox.max_size)
        yield CounterMetricFamily("gateway_outbox_dropped_readings", "Readings dropped because "
                                  "the outbox was full (kept across restarts).",
                                  value=stats.dropped_readings)
        unconfirmed = GaugeMetricFamily("gateway_outbox_unconfirmed_records", "Records the "
                                        "sink has not confirmed yet (its depth).", labels=["sink"])
        age = GaugeMetricFamily("gateway_outbox_oldest_unconfirmed_age_seconds", "Age of the "
                                "oldest record the sink has not confirmed (its lag); 0 when "
                                "it is up to date.", labels=["sink"])
        up = GaugeMetricFamily("gateway_sink_up", "0 while the sink's peer fails (retrying), "
                               "else 1.", labels=["sink"])
        down = GaugeMetricFamily("gateway_sink_down_seconds", "How long the sink has been "
                                 "failing; 0 while up.", labels=["sink"])
        delivered = CounterMetricFamily("gateway_sink_delivered", "Records the sink's peer "
                                        "confirmed since start.", labels=["sink"])
        errors = CounterMetricFamily("gateway_sink_errors", "Failed sends since start.",
                                     labels=["sink"])
        last = GaugeMetricFamily("gateway_sink_last_delivery_timestamp_seconds",
                                 "When the sink's peer last confirmed records.", labels=["sink"])
        for sink in gw.sinks_view(now):
            name = [str(sink["sink"])]
            unconfirmed.add_metric(name, _number(sink["behind"]))
            age.add_metric(name, _number(sink["oldest_unconfirmed_age"]))
            up.add_metric(name, 0 if sink["last_error"] else 1)
            down.add_metric(name, _number(sink["down_for"]))
            delivered.add_metric(name, _number(sink["delivered"]))
            errors.add_metric(name, _number(sink["failures"]))
            if sink.get("last_success") is not None:
                last.add_metric(name, _number(sink["last_success"]))
        yield from (unconfirmed, age, up, down, delivered, errors, last)

    def _rules(self) -> Iterator[Metric]:
        gw = self.gateway
        stats = gw.rules.stats()
        alarms = GaugeMetricFamily("gateway_alarms", "Alarms by ISA-18.2 state.",
                                   labels=["state"])
        counts = stats.get("alarms") or {}
        for state in AlarmState:
            alarms.add_metric([str(state)], counts.get(str(state), 0))
        yield alarms
        yield GaugeMetricFamily("gateway_tickets_open", "Tickets being worked on (open, "
                                "dispatched, on site).", value=stats.get("open_tickets", 0))
        yield CounterMetricFamily("gateway_rule_evaluations", "Rule evaluations since start.",
                                  value=stats.get("evaluations", 0))
        yield CounterMetricFamily("gateway_rule_errors", "Rule evaluations that raised "
                                  "(counted, the rule's alarm kept as it was).",
                                  value=stats.get("evaluation_errors", 0))
        yield CounterMetricFamily("gateway_stage_errors", "Batches an edge stage (energy, "
                                  "rules) failed on: stored, not evaluated.",
                                  value=gw.pipeline.stage_errors)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def build_registry(gw: Gateway) -> CollectorRegistry:
    """The gateway's collector, and the process's own (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gw))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """`GET /metrics` on `host:port`, served on the gateway's event loop."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; OSError when the address cannot be bound (in use, not this host's)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("metrics endpoint listening", url=f"http://{self.where}/metrics")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def where(self) -> str:
        """host:port as a URL writes it ([::1]:9108 for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        try:
            body = encoder(self.registry)
        except Exception as exc:  # a bug in a figure costs the scrape, never the daemon
            log.exception("metrics scrape failed", error=repr(exc))
            return web.Response(status=500, text=f"metrics failed: {exc!r}\n")
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="site gateway: metrics at /metrics\n")
