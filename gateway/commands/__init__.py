"""Commands to the running gateway: write a point, ask for a device status, reload, and
(with the rule engine) acknowledge, shelve and service alarms, step tickets, maintenance.

They arrive from the central platform over the upstream MQTT connection and from site
engineers over the local control socket (`local`); both go through one handler, so
they are serialised together and audited alike. `models` says what a command and a
reply are, `access` who sent a command and whether they may send its kind, `authorise`
whether a write may reach a device, `handler` runs them, `audit` keeps the tamper-evident
record of every one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.commands.access import Caller, CommandAccess
from gateway.commands.audit import AUDIT_FILE, AuditLog
from gateway.commands.handler import CommandHandler
from gateway.commands.local import CONTROL_SOCKET, LocalControl

if TYPE_CHECKING:
    from gateway.daemon import Gateway
    from gateway.sinks.mqtt import MqttSink

__all__ = [
    "AUDIT_FILE", "CONTROL_SOCKET", "AuditLog", "Caller", "CommandAccess", "CommandHandler",
    "LocalControl", "build_commands",
]

LOCAL_VIA = "local"  # the handler's default `via` when there is no upstream connection


def build_commands(gateway: Gateway) -> CommandHandler:
    """The gateway's command handler with its audit log open, always.

    Always, because the local control socket (the CLI) must work on a site with no
    upstream, or with the platform's commands turned off. The handler subscribes on the
    upstream connection only when `upstream.commands` is on; otherwise it has no
    connection and serves the local channel alone. Close it with `handler.close()`.
    `upstream.commands.allow`, when set, decides for both channels who may send what.
    """
    sink = _upstream_sink(gateway)
    upstream = gateway.config.upstream
    allow = upstream.commands.allow if upstream is not None else None
    audit = AuditLog(gateway.data_dir / AUDIT_FILE)
    audit.open()
    if sink is None:
        return CommandHandler(gateway, None, audit, via=LOCAL_VIA, access=CommandAccess(allow),
                              load=gateway.load_config)
    assert upstream is not None  # _upstream_sink found its sink
    # the sink's own topics: commands and replies sit beside its telemetry, by construction
    handler = CommandHandler(
        gateway, sink, audit, commands_topic=sink.topics.commands, reply_topic=sink.topics.reply,
        via=upstream.username or sink.client_id,
        access=CommandAccess(allow, sink.topics.commands), load=gateway.load_config,
    )
    handler.attach()
    return handler


def _upstream_sink(gateway: Gateway) -> MqttSink | None:
    """The running upstream sink when it takes commands; None when there is none or it does not."""
    from gateway.sinks.mqtt import MqttSink

    upstream = gateway.config.upstream
    if upstream is None or not upstream.commands.enabled:
        return None
    sink = next(
        (r.sink for r in gateway.runners
         if isinstance(r.sink, MqttSink) and r.sink.name == upstream.name),
        None,
    )
    if sink is None:  # build_sinks always makes one for upstream; guard the invariant
        raise RuntimeError(f"no running sink for upstream {upstream.name!r}")
    return sink
