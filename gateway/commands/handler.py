"""Runs the platform's commands: parse, authorise, execute with a timeout, audit, reply.

Commands run one at a time in the order they arrive: two writes to one point land in
the order the platform sent them, a write never races a reload, and the audit log's
order is the order things happened. Commands are rare, so one at a time costs nothing.
Nothing a payload contains can raise into the daemon: every failure becomes a refused
or failed outcome, an audit line and (when the command had an id) a reply.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from drivers.base import Driver, DriverError
from gateway.commands.audit import AuditEntry, AuditLog, iso_now
from gateway.commands.authorise import Refused, known, writable_driver
from gateway.commands.models import (
    DeviceStatusCommand,
    Rejected,
    ReloadCommand,
    Reply,
    WriteCommand,
    parse_command,
)
from gateway.config.errors import ConfigError
from gateway.config.models import SiteConfig
from gateway.health import DeviceHealth

log = structlog.get_logger(__name__)

WRITE_TIMEOUT = 15.0  # seconds: a device's timeout times its retries, with room to spare
RELOAD_TIMEOUT = 60.0  # seconds to load the files and restart every driver
CLOSE_TIMEOUT = 2.0  # seconds stop() waits for a command in flight
REMEMBERED_REPLIES = 1000  # replies kept by request id, so a redelivered command is not rerun


class CommandTarget(Protocol):
    """What commands act on: the running gateway (gateway/daemon.py)."""

    config: SiteConfig
    drivers: list[Driver]
    health: dict[str, DeviceHealth]

    async def reload(self, config: SiteConfig) -> dict[str, object]: ...


class Connection(Protocol):
    """The upstream MQTT connection commands arrive on and replies leave by."""

    def subscribe(self, topic: str, handler: Callable[[str, bytes], Awaitable[None] | None],
                  qos: int = 1) -> None: ...

    async def publish_now(self, topic: str, payload: bytes, qos: int = 1) -> bool: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a command ended; `value` is what the audit log keeps as the command's "what"."""

    outcome: Literal["accepted", "refused", "failed"]
    reason: str | None = None
    result: dict[str, Any] | None = None
    value: Any = None


class CommandHandler:
    """Subscribes to `commands_topic`, answers on `reply_topic(id)`
    (`<prefix>/<site>/<gateway>/commands` and `.../replies/<id>`, docs/upstream.md).

    `via` names the connection commands arrive on (the MQTT user, else the client id):
    MQTT 3.1.1 does not tell a subscriber who published, so a command without "by" is
    audited as coming from that connection, whose broker ACL decides who may publish.
    """

    def __init__(
        self, target: CommandTarget, connection: Connection | None, audit: AuditLog, *,
        commands_topic: str = "", reply_topic: Callable[[str], str] = str, via: str = "local",
        write_timeout: float = WRITE_TIMEOUT,
        load: Callable[[Any], SiteConfig] | None = None,
    ) -> None:
        self.target = target
        self.connection = connection
        self.audit = audit
        self.commands_topic = commands_topic
        self.reply_topic = reply_topic
        self.via = via
        self.write_timeout = write_timeout
        self._load = load
        self._lock = asyncio.Lock()
        self._answered: OrderedDict[str, Reply] = OrderedDict()  # request id -> its reply
        self._closing = False
        self._audit_error: str | None = None  # set while the audit log cannot be written

    def attach(self) -> None:
        """Subscribe on the upstream connection (made again by it on every reconnect)."""
        if self.connection is None:
            raise RuntimeError("commands have no upstream connection to subscribe on")
        self.connection.subscribe(self.commands_topic, self.on_message)
        log.info("accepting commands", topic=self.commands_topic, audit=str(self.audit.path))

    async def on_message(self, topic: str, payload: bytes) -> None:
        """The subscription's handler: run the command and publish its reply."""
        reply = await self.handle(payload)
        if reply is None:
            return
        topic = self.reply_topic(reply.id)
        if self.connection is None or not await self.connection.publish_now(topic, reply.payload(), qos=1):
            log.warning("command reply not confirmed by the broker", request_id=reply.id, topic=topic)

    async def handle(self, payload: bytes, via: str | None = None) -> Reply | None:
        """Run one command and audit it; the reply to send, None when it had no usable id.

        `via` names where this command came from when not the upstream connection (the
        local CLI: `cli:<user>`); a command without "by" is audited as coming from it.
        """
        via = via or self.via
        async with self._lock:
            if self._closing:
                log.warning("command ignored: the gateway is stopping", bytes=len(payload))
                return None
            parsed = parse_command(payload)
            if not isinstance(parsed, Rejected) and parsed.id in self._answered:
                # A redelivery (QoS 1 DUP, a platform retry): answer again, never run twice.
                log.info("repeated command answered again", request_id=parsed.id)
                return self._answered[parsed.id]
            if isinstance(parsed, Rejected):
                request_id, kind, by, target, value = parsed.request_id, parsed.type, parsed.by, None, None
                done = Outcome("refused", parsed.reason)
            else:
                request_id, kind, by = parsed.id, parsed.type, parsed.by
                target, value = self._target(parsed), getattr(parsed, "value", None)
                done = await self._run(parsed)
                value = done.value if done.value is not None else value
            entry = AuditEntry(
                who=by or via, outcome=done.outcome, request_id=request_id, type=kind,
                target=target, value=value, reason=done.reason, via=via,
            )
            await self._audit(entry)
            seq, head = self.audit.count, self.audit.head  # the chain head, kept in the journal too
            if self._closing:  # close() gave up waiting for this command: close the log now
                await asyncio.to_thread(self.audit.close)
        log.info(
            "command", request_id=request_id, type=kind, target=target, who=entry.who,
            outcome=done.outcome, reason=done.reason, audit_seq=seq, audit_head=head,
        )
        if request_id is None:
            return None
        reply = Reply(
            id=request_id, ok=done.outcome == "accepted", error=done.reason,
            result=done.result, ts=iso_now(),
        )
        if not isinstance(parsed, Rejected):
            self._answered[request_id] = reply
            while len(self._answered) > REMEMBERED_REPLIES:
                self._answered.popitem(last=False)
        return reply

    async def close(self) -> None:
        """Refuse new commands, give one in flight a moment, close the audit log.

        A command still running after CLOSE_TIMEOUT (a write to a device that does not
        answer) keeps the log open and closes it once its own line is written: stopping
        the drivers makes it fail promptly, and its outcome is audited all the same.
        """
        self._closing = True
        try:
            await asyncio.wait_for(self._lock.acquire(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("a command was still running at stop", timeout=CLOSE_TIMEOUT)
            return
        try:
            await asyncio.to_thread(self.audit.close)
        finally:
            self._lock.release()

    # --- execution -------------------------------------------------------------------

    async def _run(self, command: WriteCommand | DeviceStatusCommand | ReloadCommand) -> Outcome:
        try:
            if isinstance(command, WriteCommand):
                return await self._write(command)
            if isinstance(command, DeviceStatusCommand):
                return self._device_status(command)
            return await self._reload()
        except Refused as exc:
            return Outcome("refused", str(exc))
        except Exception as exc:  # a bug must cost one command, never the daemon
            log.exception("command failed unexpectedly", request_id=command.id)
            return Outcome("failed", f"internal error: {exc!r}")

    async def _write(self, command: WriteCommand) -> Outcome:
        if self._audit_error is not None:
            raise Refused(f"writes are refused while the audit log cannot be written ({self._audit_error})")
        driver = writable_driver(self.target.config, self.target.drivers, command)
        extra = {} if command.priority is None else {"priority": command.priority}
        try:
            await asyncio.wait_for(
                driver.write(command.point, command.value, **extra), self.write_timeout
            )
        except DriverError as exc:
            # bad_request: the driver refused before sending anything; the rest reached the device
            return Outcome("refused" if exc.quality == "bad_request" else "failed", str(exc))
        except TimeoutError:
            return Outcome(
                "failed",
                f"{command.device} did not complete the write within {self.write_timeout:g} s; "
                "it may or may not have landed",
            )
        result = {"device": command.device, "point": command.point, "value": command.value, **extra}
        return Outcome("accepted", result=result)

    def _device_status(self, command: DeviceStatusCommand) -> Outcome:
        config = self.target.config
        if not any(d.id == command.device for d in config.devices):
            raise Refused(f"unknown device {command.device!r}{known(d.id for d in config.devices)}")
        driver = next((d for d in self.target.drivers if d.device.id == command.device), None)
        health = self.target.health.get(command.device)
        if driver is None or health is None:
            raise Refused(f"device {command.device} is disabled in the configuration")
        return Outcome("accepted", result={
            "device": command.device, **health.snapshot(), "requests": driver.stats(),
        })

    async def _reload(self) -> Outcome:
        source = self.target.config.source
        if source is None:
            raise Refused("the configuration was not loaded from a file; there is nothing to reload")
        load = self._load or _load_site
        try:
            config = await asyncio.to_thread(load, source)
        except ConfigError as exc:
            errors = [str(issue) for issue in exc.issues]
            return Outcome("refused", str(exc), result={"errors": errors})
        except OSError as exc:
            raise Refused(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            summary = await asyncio.wait_for(self.target.reload(config), RELOAD_TIMEOUT)
        except ValueError as exc:
            raise Refused(f"the configuration is valid but cannot run: {exc}") from None
        except TimeoutError:
            return Outcome("failed", f"the drivers did not restart within {RELOAD_TIMEOUT:g} s")
        return Outcome("accepted", result=dict(summary), value=dict(summary))

    async def _audit(self, entry: AuditEntry) -> None:
        try:
            await asyncio.to_thread(self.audit.append, entry)
        except (OSError, RuntimeError) as exc:
            self._audit_error = str(exc)
            log.error("audit log not written", path=str(self.audit.path), error=str(exc),
                      request_id=entry.request_id, outcome=entry.outcome)
        else:
            self._audit_error = None

    def _target(self, command: WriteCommand | DeviceStatusCommand | ReloadCommand) -> str | None:
        """What the command acts on, as the audit log names it."""
        if isinstance(command, WriteCommand):
            return f"{command.device}.{command.point}"
        if isinstance(command, DeviceStatusCommand):
            return command.device
        return str(self.target.config.source or "config")


def _load_site(path: Any) -> SiteConfig:
    from gateway.config.loader import load_site

    return load_site(path)
