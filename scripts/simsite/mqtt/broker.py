"""An MQTT broker inside the simulator's process, so the demo needs no Mosquitto.

amqtt is a maintained pure-Python broker (MQTT 3.1.1). The site starts one only where its
MQTT devices point at this machine and nothing listens yet; a Mosquitto an engineer
already runs on that port (or the tests' real one) is used as it is.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import structlog

from gateway.config.models import Device

log = structlog.get_logger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PROBE_TIMEOUT = 0.5  # seconds; loopback answers or refuses at once


class EmbeddedBroker:
    """amqtt listening on `host:port`, anonymous clients allowed, nothing persisted."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: object | None = None

    async def start(self) -> None:
        """Listen; raise OSError (the port is taken) or RuntimeError (amqtt refused)."""
        from amqtt.broker import Broker
        from amqtt.errors import BrokerError

        broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # only anonymous access: no $SYS topics and no packet logging, which a demo does not need
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        })
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, f"embedded MQTT broker on {self.host}:{self.port}: {cause.strerror}") from exc
            raise RuntimeError(f"embedded MQTT broker on {self.host}:{self.port}: {exc}") from exc
        self._broker = broker
        log.info("embedded MQTT broker listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()  # type: ignore[attr-defined]

    @property
    def running(self) -> bool:
        return self._broker is not None


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at `host:port` now."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def brokers_to_embed(devices: Iterable[Device], bind: str | None = None) -> list[EmbeddedBroker]:
    """A broker for each loopback endpoint the MQTT `devices` use where nothing listens.

    `bind` is the simulator's --host: the broker listens there (0.0.0.0 to be reachable
    from other machines) while the devices still connect to loopback.
    """
    endpoints = sorted({
        ("127.0.0.1" if device.connection.host == "localhost" else device.connection.host, device.connection.port)
        for device in devices
        if device.enabled and device.connection.type == "mqtt" and device.connection.host in LOOPBACK
    })
    return [EmbeddedBroker(bind or host, port) for host, port in endpoints if not listening(host, port)]
