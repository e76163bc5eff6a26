"""The local control channel: site engineers on the box command the running daemon.

The platform may be unreachable (the uplink is down, the site has no upstream at all)
exactly when an engineer on site needs to acknowledge an alarm or put a pump into
maintenance. So the daemon also listens on a Unix socket, `<data_dir>/control.sock`,
and the `gateway` CLI talks to it.

Protocol: newline-delimited JSON, one UTF-8 line per request and one reply line per
request, in order, on one connection. A request is either

- a command, the same JSON object the platform sends (`{"id", "type", ...}`, see
  docs/commands.md): it runs through the one `CommandHandler`, so it is authorised,
  serialised with the platform's commands and audited like them; the reply is the
  command's reply (`{"id", "ok", "error"?, "result"?, "ts"}`), or
- a read-only query, `{"query": "alarms"|"tickets"|"maintenance"|"status"|"meters",
  "all": bool}`, answered from the running gateway: `{"ok": true, "result": {...}}`
  (`meters`: every counter with its latest reading, from the energy stage), or
- a tail, `{"tail": true, "devices"?, "points"?, "systems"?, "readings"?, "events"?}`
  (`gateway tail`): one reply, then the readings and events the gateway emits, one JSON
  line each, until the client hangs up; read-only and not audited, like a query. See
  gateway/commission/stream.py (a slow client loses the oldest items, never stalls us).

Anything else (malformed JSON, a line over 64 KiB, a query that is not one) gets
`{"ok": false, "error": "..."}` and the connection keeps serving.

Who may use it is decided by the file system: the socket is 0660, so the gateway's user
and group. Who did use it is decided by the kernel: the peer's uid (SO_PEERCRED) is
audited as `via: cli:<user>`, whatever name the request puts in `by`; with
`upstream.commands.allow` set, that user (`cli:<user>`) or one of its groups
(`cli:@<group>`) must be listed for the command's kind (access.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.commands.access import Caller, unix_caller
from gateway.commands.handler import CommandHandler
from gateway.commands.models import MAX_PAYLOAD, Rejected, parse_command
from gateway.commission import stream

log = structlog.get_logger(__name__)

CONTROL_SOCKET = "control.sock"
MAX_LINE = MAX_PAYLOAD  # bytes in one request line, its newline not counted
MAX_CLIENTS = 16  # connections served at once; the CLI opens one per invocation
SOCKET_MODE = 0o660
QUERIES = ("alarms", "tickets", "maintenance", "status", "meters")
QUERY_FIELDS = ("query", "all", "id")
MAX_UNIX_PATH = 107  # bytes: sun_path is 108 including its terminating NUL on Linux


class ControlError(RuntimeError):
    """The control channel cannot be served or reached; the message says why and what to do."""


class NotRunning(ControlError):
    """No daemon answers on the control socket."""


class ControlTarget(Protocol):
    """What queries read: the running gateway (gateway/daemon.py). `rules` may be None."""

    rules: Any

    def status(self) -> dict[str, object]: ...


def socket_path(data_dir: Path) -> Path:
    """Where the daemon with this data dir listens: the CLI and the daemon agree by this."""
    return Path(data_dir) / CONTROL_SOCKET


class LocalControl:
    """Serves the control socket for one gateway; `start()` then `stop()`.

    Start it after the command handler exists and the drivers run (a command may need
    every driver); stop it before the handler closes, so no request arrives at a closed
    audit log.
    """

    def __init__(self, gateway: ControlTarget, handler: CommandHandler, path: Path) -> None:
        self.gateway = gateway
        self.handler = handler
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we made
        self._clients: set[asyncio.Task[None]] = set()
        self._commands: set[asyncio.Task[Any]] = set()  # run shielded from their connection
        self.tails = stream.Tails()  # connections streaming readings and events now

    async def start(self) -> None:
        """Listen on `path`, replacing a socket left by a daemon that was killed.

        The socket is bound under a temporary name, given its mode, then renamed into
        place: there is never a moment when `control.sock` exists with the umask's mode,
        and a stale one is replaced atomically. Raises ControlError when another gateway
        is serving this data dir (two daemons on one outbox would corrupt it) or the path
        is not a socket.
        """
        temporary = self.path.with_name(f".ctl.{os.getpid()}")
        longest = max(len(os.fsencode(self.path)), len(os.fsencode(temporary)))
        if longest > MAX_UNIX_PATH:
            raise ControlError(
                f"control socket path {self.path} is too long ({longest} bytes while binding); "
                f"Unix sockets allow {MAX_UNIX_PATH}: use a shorter data_dir"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_check_not_serving, self.path)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(temporary))
            os.chmod(temporary, SOCKET_MODE)
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
            os.replace(temporary, self.path)
        except OSError:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        info = os.stat(self.path)
        self._inode = (info.st_dev, info.st_ino)
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            self._remove_socket()
            raise
        log.info("local control listening", path=str(self.path), mode=oct(SOCKET_MODE))

    async def stop(self) -> None:
        """Stop listening, end the connections, remove the socket file.

        A command already running is not cancelled with its connection (it is shielded):
        it finishes and is audited, and `CommandHandler.close()` waits for it.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.wait_closed()
        self._remove_socket()
        log.info("local control stopped", path=str(self.path))

    def _remove_socket(self) -> None:
        """Unlink the socket file only if it is still ours (not a newer daemon's)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    # --- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_CLIENTS:
            log.warning("local control connection refused: too many clients", limit=MAX_CLIENTS)
            with contextlib.suppress(ConnectionError):
                await _send(writer, _error(f"the gateway serves at most {MAX_CLIENTS} control "
                                           "connections at once; try again"))
            await _close(writer)
            return
        self._clients.add(task)
        caller = peer_caller(writer.get_extra_info("socket"))
        user = caller.name
        log.debug("local control connection", user=user)
        try:
            while True:
                line = await _read_line(reader)
                if line is None:
                    break
                reply = await self._answer(line, caller)
                if isinstance(reply, _Tail):  # the connection streams from now on
                    await self.tails.serve(self.gateway, reply.request, user, reader, writer)
                    break
                await _send(writer, reply)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the gateway is stopping
        except Exception:  # a bug costs this connection, never the daemon
            log.exception("local control connection failed", user=user)
        finally:
            self._clients.discard(task)
            await _close(writer)

    async def _answer(
        self, line: bytes | _Oversized, caller: Caller
    ) -> dict[str, Any] | bytes | _Tail:
        """One request line → its reply (a dict, or a command reply's bytes)."""
        user = caller.name
        if isinstance(line, _Oversized):
            log.warning("local control request too long", user=user, bytes=line.size)
            return _error(f"request is over {MAX_LINE} bytes; a request is one JSON object "
                          f"of at most {MAX_LINE} bytes on one line")
        try:
            data = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return _error(f"request is not UTF-8 text ({exc.reason} at byte {exc.start})")
        except ValueError as exc:
            return _error(f"request is not JSON: {exc}")
        if not isinstance(data, dict):
            return _error(f"a request is a JSON object, not {type(data).__name__}")
        if "query" in data:
            return self._query(data, user)
        if "tail" in data:
            return _Tail(data)
        return await self._command(line, caller)

    async def _command(self, payload: bytes, caller: Caller) -> dict[str, Any] | bytes:
        """Run a command through the handler, shielded: a client that hangs up or a stop
        that cancels the connection must not cut a write short or lose its audit line."""
        run = asyncio.ensure_future(self.handler.handle(payload, caller=caller))
        self._commands.add(run)
        run.add_done_callback(self._commands.discard)
        reply = await asyncio.shield(run)
        if reply is not None:
            return reply.payload()
        parsed = parse_command(payload)
        if isinstance(parsed, Rejected):  # no usable id: audited, but the handler has no reply
            return _error(parsed.reason)
        return _error("the gateway is stopping; the command was not run")

    def _query(self, data: dict[str, Any], user: str) -> dict[str, Any]:
        """Read-only answers from the running gateway; never audited (nothing changes)."""
        kind, everything = data.get("query"), data.get("all", False)
        extra = sorted(set(data) - set(QUERY_FIELDS))
        if extra:
            return _error(f"unknown field {extra[0]!r}; a query takes {', '.join(QUERY_FIELDS)}")
        if kind not in QUERIES:
            return _error(f"query {kind!r} is not known; one of {', '.join(QUERIES)}")
        if not isinstance(everything, bool):
            return _error("all must be true or false")
        rules = getattr(self.gateway, "rules", None)
        energy = getattr(self.gateway, "energy", None)
        if kind == "meters" and energy is None:
            return _error("energy is not running on this gateway; there are no meters to show")
        if kind not in ("status", "meters") and rules is None:
            return _error("the rule engine is not running on this gateway; "
                          "there are no alarms, tickets or maintenance modes to show")
        try:
            if kind == "alarms":
                result: dict[str, Any] = {"alarms": rules.alarms(active_only=not everything)}
            elif kind == "tickets":
                result = {"tickets": rules.tickets(open_only=not everything)}
            elif kind == "maintenance":
                result = {"maintenance": rules.maintenance_modes()}
            elif kind == "meters":
                result = {"meters": energy.meters()}
            else:
                result = dict(self.gateway.status())
        except Exception as exc:  # a view that fails costs this answer, never the daemon
            log.exception("local control query failed", query=kind, user=user)
            return _error(f"internal error answering {kind}: {exc!r}")
        log.debug("local control query", query=kind, all=everything, user=user)
        reply: dict[str, Any] = {"ok": True, "result": result}
        if isinstance(data.get("id"), str):
            reply["id"] = data["id"]
        return reply


class _Tail:
    """A tail request: the connection streams instead of answering line by line."""

    __slots__ = ("request",)

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request


class _Oversized:
    """A request line that was too long; it has been read and thrown away."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


async def _read_line(reader: asyncio.StreamReader) -> bytes | _Oversized | None:
    """The next request line without its newline; None at the end of the stream.

    A last line without a newline still counts (`printf '{...}' | socat` works). A line
    over MAX_LINE is read to its end and discarded, so the next line is read cleanly.
    """
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial if exc.partial.strip() else None
        except asyncio.LimitOverrunError as exc:
            size = 0
            while True:  # discard up to the newline, a buffer at a time
                size += len(await reader.readexactly(exc.consumed))
                try:
                    await reader.readuntil(b"\n")
                    return _Oversized(size + 1)
                except asyncio.IncompleteReadError:
                    return None  # the client ended inside the oversized line
                except asyncio.LimitOverrunError as more:
                    exc = more
        line = line[:-1]
        if line.strip():
            return line  # blank lines are keep-alives: no reply


async def _send(writer: asyncio.StreamWriter, reply: dict[str, Any] | bytes) -> None:
    data = reply if isinstance(reply, bytes) else _dumps(reply)
    writer.write(data + b"\n")
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def peer_caller(sock: Any) -> Caller:
    """The account of the process at the other end, from the kernel (SO_PEERCRED): its
    login name and groups.

    Not from the request: `by` says who the engineer says they are, this says which
    account on the box sent it. A uid with no passwd entry is named `uid:<n>`; a peer the
    kernel cannot name is `unknown`, with no groups (no `cli:` entry but `cli:*` admits it).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return Caller("cli", "unknown")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
        _pid, uid, gid = struct.unpack("3i", creds)
    except OSError:
        return Caller("cli", "unknown")
    return unix_caller(uid, gid)


def _check_not_serving(path: Path) -> None:
    """Refuse to take over a socket a live gateway answers on, or a file that is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket; remove it or use another data_dir")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        log.info("replacing a stale control socket", path=str(path))  # its daemon is gone
        return
    finally:
        probe.close()
    raise ControlError(
        f"another gateway is already serving {path.parent} (its control socket answers); "
        "two gateways must not share a data dir"
    )


# --- the client --------------------------------------------------------------------------


def request(path: Path, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon listening on `path` and return its reply.

    Synchronous on purpose: the CLI sends one request and waits. Raises NotRunning when
    no daemon listens there, ControlError for anything else that keeps the request from
    being answered (permissions, no answer within `timeout`, a reply that is not JSON).
    """
    path = Path(path)
    data = _dumps(body)
    if len(data) > MAX_LINE:
        raise ControlError(f"request is {len(data)} bytes; at most {MAX_LINE}")
    sock = _connect(path, timeout)
    try:
        try:
            sock.sendall(data + b"\n")
            reply = _recv_line(sock)
        except TimeoutError:
            raise ControlError(
                f"the gateway did not answer within {timeout:g} s; a command may still run: "
                "check `gateway audit`"
            ) from None
        except OSError as exc:
            raise ControlError(f"the connection to the gateway failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not reply:
        raise ControlError("the gateway closed the connection without answering (is it stopping?)")
    return _parse_reply(reply)


def _connect(path: Path, timeout: float) -> socket.socket:
    """A connected socket to the daemon at `path`, or ControlError saying why not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()  # refused: a socket file left by a killed daemon
        raise NotRunning(
            f"no gateway is running with data dir {path.parent} (no control socket at {path}); "
            "start it with `gateway run`"
        ) from None
    except PermissionError:
        sock.close()
        raise ControlError(
            f"permission denied on {path}: run as the gateway's user or a member of its "
            "group (the socket is 0660)"
        ) from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot reach the gateway at {path}: {exc.strerror or exc}") from None
    return sock


def request_stream(
    path: Path, body: dict[str, Any], timeout: float = 10.0
) -> Iterator[dict[str, Any]]:
    """Send one streaming request (a tail) and yield its reply, then every line the daemon
    streams, until it closes the connection (it stopped) or the caller stops iterating.

    Raises ControlError as `request` does; the reply must come within `timeout`, the
    lines after it may take as long as they take.
    """
    path = Path(path)
    sock = _connect(path, timeout)
    try:
        try:
            sock.sendall(_dumps(body) + b"\n")
            reader = sock.makefile("rb")
            first = reader.readline()
        except TimeoutError:
            raise ControlError(f"the gateway did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"the connection to the gateway failed: {exc.strerror or exc}") from None
        if not first:
            raise ControlError("the gateway closed the connection without answering (is it stopping?)")
        yield _parse_reply(first)
        sock.settimeout(None)
        for line in reader:
            if line.strip():
                yield _parse_reply(line)
    finally:
        sock.close()


def _parse_reply(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line.decode("utf-8"))
    except ValueError as exc:
        raise ControlError(f"the gateway's reply is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise ControlError("the gateway's reply is not a JSON object")
    return answer


def _recv_line(sock: socket.socket) -> bytes:
    """Bytes up to the first newline (without it); what there is if the peer closes first."""
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            return b"".join(chunks)
        chunks.append(chunk)
