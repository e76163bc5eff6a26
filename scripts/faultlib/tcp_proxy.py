"""A TCP relay between the gateway and a peer (a broker, a device) that breaks on demand.

    with TcpProxy(("127.0.0.1", broker.port)) as proxy:   # the gateway connects to proxy.port
        proxy.cut()                    # every live connection reset, as a NAT timeout does
        proxy.cut_after(2000)          # the next 2000 bytes towards the peer go, then reset:
                                       # a publish cut in the middle of its packet
        proxy.refuse()                 # nothing listens: connections refused
        proxy.blackhole()              # connections accepted, nothing relayed either way
        proxy.relay()                  # back to normal, same port

Cutting aborts both sides (RST), so neither the gateway nor the peer sees a clean close.
`stats` counts connections and the bytes relayed each way.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from faultlib.loop import BackgroundLoop

HOST = "127.0.0.1"
_CHUNK = 65536


@dataclass
class ProxyStats:
    accepted: int = 0
    cut: int = 0  # connections this proxy reset on purpose
    to_peer: int = 0  # bytes relayed from clients to the peer
    to_client: int = 0


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    peer: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.peer):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """Relays 127.0.0.1:`port` to `target`; see the module doc for the faults it plays."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.port = port
        self.mode = "relay"
        self.stats = ProxyStats()
        self._cut_budget: int | None = None  # bytes towards the peer before the next cut
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._bg: BackgroundLoop | None = None

    # --- life cycle (any thread) -------------------------------------------------------

    def start(self) -> TcpProxy:
        self._bg = BackgroundLoop(f"tcp-proxy:{self.target[1]}")
        self._bg.run(self._listen())
        return self

    def stop(self) -> None:
        if self._bg is None:
            return
        self._bg.run(self._close(cut=True))
        self._bg.close()
        self._bg = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults (any thread) -----------------------------------------------------------

    def relay(self) -> None:
        """Relay again (listening again on the same port after `refuse`)."""
        self.mode = "relay"
        self._run(self._listen())

    def refuse(self) -> None:
        """Stop listening and cut every connection: the peer looks down."""
        self.mode = "refuse"
        self._run(self._close(cut=True))

    def blackhole(self) -> None:
        """Accept connections but relay nothing either way; live connections go quiet too."""
        self.mode = "blackhole"

    def cut(self) -> int:
        """Reset every live connection now; how many there were."""
        return self._run(self._cut_all())

    def cut_after(self, nbytes: int) -> None:
        """Relay `nbytes` more towards the peer, then reset the connection carrying them."""
        self._cut_budget = nbytes

    @property
    def cut_pending(self) -> bool:
        """A `cut_after` is armed and has not happened yet."""
        return self._cut_budget is not None

    @property
    def connections(self) -> int:
        return len(self._links)

    def _run(self, coro):
        assert self._bg is not None, "proxy not started"
        return self._bg.run(coro)

    # --- on the proxy's loop ------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, HOST, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self, *, cut: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if cut:
            await self._cut_all(count=False)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _cut_all(self, count: bool = True) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        if count:
            self.stats.cut += len(links)
        self._links.clear()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.mode == "blackhole":
                await self._swallow(reader)
                return
            try:
                peer_reader, link.peer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the peer itself is down: the client sees its connection closed
            await asyncio.gather(
                self._pump(reader, link.peer, link, towards_peer=True),
                self._pump(peer_reader, writer, link, towards_peer=False),
            )
        finally:
            self._links.discard(link)
            link.abort()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(_CHUNK):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link, *, towards_peer: bool) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if self.mode == "blackhole":
                    continue
                if towards_peer and self._cut_budget is not None:
                    if len(data) >= self._cut_budget:
                        data, self._cut_budget = data[: self._cut_budget], None
                        writer.write(data)
                        self.stats.to_peer += len(data)
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
                        self.stats.cut += 1
                        link.abort()
                        return
                    self._cut_budget -= len(data)
                writer.write(data)
                if towards_peer:
                    self.stats.to_peer += len(data)
                else:
                    self.stats.to_client += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()
