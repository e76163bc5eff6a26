"""An HTTP front for InfluxDB's write API that misbehaves on demand.

Writes (`/write` of api v1, `/api/v2/write` of api v2) are passed on to a real backend
(InfluxDB 1.6, VictoriaMetrics) unless a fault is playing:

    front = InfluxFront(influxdb1.url).start()   # the gateway writes to front.url
    front.down()                # nothing listens: connection refused
    front.up()                  # back on the same port
    front.slow(3.0)             # each write waits 3 s before it is passed on
    front.fail(500)             # every write answered 500 (nothing written)
    front.throttle(2)           # every write answered 429 with Retry-After: 2
    front.refuse_line(match)    # a write holding a line for which match(line) is true is
                                # answered 400 (nothing of it written), like InfluxDB does
                                # for a line it cannot parse; the rest is passed on
    front.passing()             # no fault

Every request is logged in `requests` (path, status answered, lines, when), so a test
counts what the gateway sent and what it was told. Gzip bodies are passed on
decompressed.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from faultlib.loop import BackgroundLoop

HOST = "127.0.0.1"
_PASSED_HEADERS = ("Content-Type", "Authorization")  # the body is passed on uncompressed


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    status: int
    lines: int
    at: float  # time.monotonic() when answered


class InfluxFront:
    """See the module doc."""

    def __init__(self, backend: str, port: int = 0) -> None:
        self.backend = backend.rstrip("/")
        self.port = port
        self.requests: list[Request] = []
        self.refused_lines: list[str] = []
        self._status: int | None = None  # answer every write with this
        self._retry_after: str | None = None
        self._delay = 0.0
        self._refuse: Callable[[str], bool] | None = None
        self._bg: BackgroundLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> InfluxFront:
        self._bg = BackgroundLoop(f"influx-front:{self.backend}")
        self._bg.run(self._start())
        return self

    def stop(self) -> None:
        if self._bg is None:
            return
        self._bg.run(self._stop())
        self._bg.close()
        self._bg = None

    def __enter__(self) -> InfluxFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults -------------------------------------------------------------------------

    def passing(self) -> None:
        self._status, self._retry_after, self._delay, self._refuse = None, None, 0.0, None

    def down(self) -> None:
        """Stop listening (connections refused) until `up()`."""
        assert self._bg is not None
        self._bg.run(self._unlisten())

    def up(self) -> None:
        assert self._bg is not None
        self._bg.run(self._listen())

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def fail(self, status: int = 500) -> None:
        self._status, self._retry_after = status, None

    def throttle(self, retry_after: float) -> None:
        self._status, self._retry_after = 429, f"{retry_after:g}"

    def refuse_line(self, match: Callable[[str], bool]) -> None:
        self._refuse = match

    def answered(self, status: int, since: float = 0.0) -> int:
        """Requests answered with `status` since monotonic time `since`."""
        return sum(1 for r in self.requests if r.status == status and r.at >= since)

    # --- on the front's loop ------------------------------------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        if self._site is not None:
            return
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server  # noqa: SLF001 - aiohttp keeps the bound socket there
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _unlisten(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        # and the keep-alive connections a client holds, or it would not notice
        server = self._runner.server if self._runner is not None else None
        for handler in list(getattr(server, "connections", ())):
            if handler.transport is not None:
                handler.transport.abort()

    async def _stop(self) -> None:
        await self._unlisten()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # aiohttp has already undone a gzip Content-Encoding
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        lines = [line for line in body.decode("utf-8").split("\n") if line.strip()]
        if self._delay:
            await asyncio.sleep(self._delay)
        response = await self._answer(request, body, lines)
        self.requests.append(Request(request.path, response.status, len(lines), time.monotonic()))
        return response

    async def _answer(self, request: web.Request, body: bytes,
                      lines: list[str]) -> web.StreamResponse:
        if self._status is not None:
            headers = {"Retry-After": self._retry_after} if self._retry_after else {}
            return web.json_response({"error": f"injected {self._status}"},
                                     status=self._status, headers=headers)
        refuse = self._refuse
        if refuse is not None:
            bad = [line for line in lines if refuse(line)]
            if bad:
                self.refused_lines.extend(bad)
                return web.json_response(
                    {"error": f"unable to parse '{bad[0][:200]}': injected bad point"}, status=400)
        assert self._session is not None
        headers = {k: request.headers[k] for k in _PASSED_HEADERS if k in request.headers}
        async with self._session.request(
            request.method, self.backend + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            return web.Response(body=payload, status=upstream.status,
                                content_type=upstream.content_type or "application/json")
