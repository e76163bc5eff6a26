"""Typed configuration for the local status page: site.yaml `web:` (docs/status-page.md).

Off unless `web:` is written. It listens on 127.0.0.1 unless a host is written on
purpose: the page names every device and alarm of the site, and with a password it
acknowledges alarms. Listening anywhere else without a password file is refused: the
page would then be open to the whole building network, with no way to tell who acted.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, model_validator

from gateway.config.types import Duration, Model

DEFAULT_LISTEN = "127.0.0.1:8080"


def web_listen_address(text: str) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port`, `:port` or a bare port (127.0.0.1).

    Port 0 is allowed: the system picks a free one (tests, and the screenshot script).
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port with a port 1-65535; "
                         "e.g. 127.0.0.1:8080, or 8080 for localhost")
    return host.strip("[]") or "127.0.0.1", int(port)


def _listen(text: str) -> str:
    web_listen_address(text)
    return text


def is_loopback(host: str) -> bool:
    """Whether only this box can reach `host`: 127.0.0.0/8, ::1 or `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def web_switch(value: Any) -> Any:
    """`web: true` is short for `web: {}` (the defaults); `web: false` turns it off."""
    if value is True:
        return {}
    if value is False:
        return None
    if value is not None and not isinstance(value, dict | BaseModel):
        raise ValueError("web takes true, false, or a mapping with listen:, password_file: "
                         "and language:")
    return value


class WebConfig(Model):
    """The status page: devices, live values, alarms, tickets, outbox and sinks.

    `password_file` holds the logins allowed to change anything (acknowledge alarms):
    one `login:password` line each, or a single line that is the password of `admin`.
    A relative path is relative to site.yaml's folder. Without it the page is read-only.
    On a listen address other than loopback, the page shows nothing before a login.
    """

    listen: Annotated[str, AfterValidator(_listen)] = DEFAULT_LISTEN
    password_file: Path | None = None
    language: Literal["zh", "en"] = "zh"  # when the browser's Accept-Language names neither
    session_timeout: Duration = 8 * 3600.0  # a login lasts one shift, then asks again

    @model_validator(mode="after")
    def _loopback_or_password(self) -> WebConfig:
        host, _port = web_listen_address(self.listen)
        if not is_loopback(host) and self.password_file is None:
            raise ValueError(
                f"listen {self.listen!r} is reachable from other machines; write "
                "password_file: (one login:password line per user) or listen on "
                f"127.0.0.1 (e.g. {DEFAULT_LISTEN}) and reach it through an SSH tunnel"
            )
        return self

    @property
    def address(self) -> tuple[str, int]:
        return web_listen_address(self.listen)

    @property
    def private(self) -> bool:
        """True when other machines can reach the page: it then shows nothing before a login."""
        return not is_loopback(self.address[0])
