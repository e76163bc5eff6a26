"""The InfluxDB sink: readings as line protocol, confirmed by a 2xx per chunk.

Two wire forms, each one aiohttp POST of line protocol per chunk: api v2 (InfluxDB
2.x/3.x, 1.8+ compatibility API, VictoriaMetrics) to /api/v2/write with the token, and
api v1 (InfluxDB <= 1.7, which has no /api/v2/write) to /write. The body is gzipped at
level 1 (`gzip: true`): a third of the bytes of level 9 for a tenth of the CPU, where the
client library's level 9 cost more than encoding the lines.

What the server answers decides what happens to a chunk:

- 2xx: delivered.
- 400/413/422: the chunk holds data the server refuses. It is bisected until the
  offending line stands alone; that line is logged once and skipped, every other
  line is delivered. Skipping is the only way forward: resending a line InfluxDB
  refuses would stop this sink for good.
- 401/403/404: credentials or the bucket/database are wrong. Nothing is dropped;
  SinkUnavailable, logged once per outage with what to fix.
- 429/503 with Retry-After, other 5xx, timeouts, refused connections:
  SinkUnavailable, and the runner retries the same records later.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
import zlib
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from gateway.batch import Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import InfluxSinkConfig
from gateway.sinks.base import Sink, SinkUnavailable
from gateway.sinks.lineproto import LineEncoder

log = structlog.get_logger(__name__)

_BAD_DATA = frozenset({400, 413, 422})
_NOT_ALLOWED = frozenset({401, 403, 404})
_LOG_REFUSED_PER_SEND = 20  # a wholly refused chunk must not flood the log


class _Refused(Exception):
    """The server refused the data itself (400/413/422); `message` is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


RETRY_AFTER_MIN = 0.5  # a server asking for 0 s must not get a tight loop
RETRY_AFTER_MAX = 300.0  # nor one asking for a day (or for ever) stall delivery that long


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP Retry-After header (delta-seconds or an HTTP date), clamped to
    [RETRY_AFTER_MIN, RETRY_AFTER_MAX]; None when absent or not a number or date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, RETRY_AFTER_MIN), RETRY_AFTER_MAX)


def server_message(body: bytes | str | None) -> str:
    """The human part of an InfluxDB error body ({"error": ...} in v1, {"message": ...} in v2)."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()[:1000]
    if isinstance(parsed, dict):
        for key in ("message", "error"):
            if isinstance(parsed.get(key), str):
                return parsed[key][:1000]
    return text.strip()[:1000]


class InfluxSink(Sink):
    """Writes readings to InfluxDB (or anything speaking its write API); events are not written.

    `written` and `rejected` count lines confirmed and lines refused as bad data.
    """

    kinds = frozenset({Kind.READING})

    def __init__(self, config: InfluxSinkConfig, catalog: Catalog) -> None:
        super().__init__(config.name)
        self.config = config
        self.encoder = LineEncoder(catalog, config.measurement, config.unit_as)
        self.written = 0
        self.rejected = 0
        self._session: aiohttp.ClientSession | None = None
        self._refusal_logged = False

    @property
    def target(self) -> str:
        """Where lines go, for log lines (never with credentials)."""
        if self.config.api == "v2":
            return f"{self.config.url} bucket {self.config.bucket}"
        return f"{self.config.url} database {self.config.database}"

    async def start(self) -> None:
        """Create the HTTP client; connects lazily, so a server that is down does not matter here."""
        auth = None
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.config.api == "v2":
            token = self.config.token.reveal() if self.config.token else ""
            if token:
                headers["Authorization"] = f"Token {token}"
        elif self.config.username:
            password = self.config.password.reveal() if self.config.password else ""
            auth = aiohttp.BasicAuth(self.config.username, password)
        self._session = aiohttp.ClientSession(
            auth=auth, headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout)
        )

    async def stop(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, records: list[Record]) -> None:
        if self._session is None:
            await self.start()
        lines = self.encoder.encode(records)
        size = self.config.batch_size
        rejected_before = self.rejected
        for start in range(0, len(lines), size):
            chunk = lines[start : start + size]
            refused_before = self.rejected
            await self._deliver(chunk, rejected_before)
            if len(chunk) > 1 and self.rejected - refused_before == len(chunk):
                # Every line refused is rarely bad data and usually a wrong target (no such
                # database, a proxy answering 400): keep the readings and retry instead.
                self.rejected = refused_before
                raise SinkUnavailable(
                    f"influxdb refused all {len(chunk)} lines of a batch; keeping them and "
                    "retrying (check database/bucket, or a proxy in between)"
                )
        unlogged = self.rejected - rejected_before - _LOG_REFUSED_PER_SEND
        if unlogged > 0:
            log.warning("influxdb refused more lines; skipped", sink=self.name, lines=unlogged)

    async def _deliver(self, lines: list[str], rejected_before: int) -> None:
        """Write `lines`; on refused data, bisect and skip only the offending lines."""
        try:
            await self._post("\n".join(lines).encode("utf-8"))
        except _Refused as exc:
            if len(lines) == 1:
                self.rejected += 1
                if self.rejected - rejected_before <= _LOG_REFUSED_PER_SEND:
                    self._log_refused(lines[0], exc)
                return
            middle = len(lines) // 2
            await self._deliver(lines[:middle], rejected_before)
            await self._deliver(lines[middle:], rejected_before)
            return
        self.written += len(lines)
        if self._refusal_logged:
            self._refusal_logged = False
            log.info("influxdb accepts writes again", sink=self.name, target=self.target)

    def _log_refused(self, line: str, exc: _Refused) -> None:
        device, point = self.encoder.origin(line) or (None, None)
        log.warning(
            "influxdb refused a line; skipped",
            sink=self.name,
            device=device,
            point=point,
            line=line,
            status=exc.status,
            error=exc.message,
        )

    async def _post(self, body: bytes) -> None:
        """One write request; returns on 2xx, raises _Refused or SinkUnavailable otherwise."""
        try:
            status, headers, text = await self._write(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(
                f"influxdb at {self.config.url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if 200 <= status < 300:
            return
        message = server_message(text)
        if status in _BAD_DATA:
            raise _Refused(status, message)
        if status in _NOT_ALLOWED:
            what = {
                401: "credentials refused (check the token / username and password)",
                403: "not allowed to write (check the token's / user's write permission)",
                404: "bucket or database not found (create it, or fix bucket: / database:)",
            }[status]
            if not self._refusal_logged:
                self._refusal_logged = True
                log.error(
                    "influxdb refuses writes; holding data until fixed",
                    sink=self.name,
                    target=self.target,
                    status=status,
                    problem=what,
                    error=message,
                )
            raise SinkUnavailable(f"influxdb HTTP {status}: {what}: {message}")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(_header(headers, "Retry-After"))
        raise SinkUnavailable(f"influxdb HTTP {status}: {message}", retry_after=retry_after)

    async def _write(self, body: bytes) -> tuple[int, Mapping[str, str] | None, Any]:
        assert self._session is not None
        if self.config.api == "v2":
            path = "/api/v2/write"
            params = {"bucket": self.config.bucket or "", "precision": "ms"}
            if self.config.org:
                params["org"] = self.config.org
        else:
            path = "/write"
            params = {"db": self.config.database or "", "precision": "ms"}
            if self.config.retention_policy:
                params["rp"] = self.config.retention_policy
        headers = {}
        if self.config.gzip:
            body = await _gzip(body)
            headers["Content-Encoding"] = "gzip"
        url = self.config.url.rstrip("/") + path
        async with self._session.post(url, params=params, data=body, headers=headers) as response:
            return response.status, response.headers, await response.read()


def _gzip_fast(body: bytes) -> bytes:
    return zlib.compress(body, 1, wbits=31)  # wbits 31: the gzip format (RFC 1952)


async def _gzip(body: bytes) -> bytes:
    """Compress a request body; big ones in a thread (zlib lets go of the GIL), so the
    loop goes on meanwhile."""
    if len(body) < 64 * 1024:
        return _gzip_fast(body)
    return await asyncio.to_thread(_gzip_fast, body)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
