"""Commands from the central platform: write a point, ask for a device status, reload.

`models` says what a command and a reply are, `authorise` whether a write may reach a
device, `handler` runs them, `audit` keeps the tamper-evident record of every one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.commands.audit import AUDIT_FILE, AuditLog
from gateway.commands.handler import CommandHandler

if TYPE_CHECKING:
    from gateway.daemon import Gateway

__all__ = ["AUDIT_FILE", "AuditLog", "CommandHandler", "attach_commands"]


def attach_commands(gateway: Gateway) -> CommandHandler | None:
    """Accept commands on the upstream connection, when there is one and it allows them."""
    from gateway.sinks.mqtt import MqttSink

    upstream = gateway.config.upstream
    if upstream is None or not upstream.commands:
        return None
    sink = next(
        (r.sink for r in gateway.runners
         if isinstance(r.sink, MqttSink) and r.sink.name == upstream.name),
        None,
    )
    if sink is None:  # build_sinks always makes one for upstream; guard the invariant
        raise RuntimeError(f"no running sink for upstream {upstream.name!r}")
    audit = AuditLog(gateway.data_dir / AUDIT_FILE)
    audit.open()
    # the sink's own topics: commands and replies sit beside its telemetry, by construction
    handler = CommandHandler(
        gateway, sink, audit, commands_topic=sink.topics.commands, reply_topic=sink.topics.reply,
        via=upstream.username or sink.client_id,
    )
    handler.attach()
    return handler
