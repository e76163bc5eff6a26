"""The local status page (`web:` in site.yaml, docs/status-page.md).

A site engineer with a phone or a laptop in the pump room sees the site's devices by
building and system with their online state and live values, the active alarms (and
acknowledges them after a login), the open tickets with their SLA countdowns, and
whether the outbox and sinks deliver. `server` serves it (aiohttp, on the gateway's
loop), `api` builds what it shows from the running gateway, `auth` keeps logins and
sessions, `language` picks zh or en; `static/` is the page itself (plain HTML, CSS and
JavaScript: no build step, nothing fetched from the internet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gateway.web.server import StatusPage

if TYPE_CHECKING:
    from gateway.web.api import StatusSource

__all__ = ["StatusPage", "start_status_page"]

log = structlog.get_logger(__name__)


async def start_status_page(gateway: StatusSource) -> StatusPage | None:
    """The gateway's status page listening, or None when `web:` is not configured or
    its address cannot be bound (logged: the page must not keep the gateway from running)."""
    if gateway.config.web is None:
        return None
    page = StatusPage(gateway)
    try:
        await page.start()
    except OSError as exc:
        log.error("status page cannot listen; running without it",
                  listen=gateway.config.web.listen, error=exc.strerror or str(exc))
        return None
    return page
