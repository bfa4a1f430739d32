"""A TCP proxy in front of a server, to cut the network on purpose in tests.

``FaultProxy(host, port)`` listens on a free loopback port (``.port``) and
forwards every connection to ``host:port``. Its mode can be switched at run
time:

- ``passthrough()``: bytes flow both ways;
- ``blackhole()``: connections are accepted and kept, but nothing is forwarded
  either way, as when a network path silently drops packets (TCP would keep
  retransmitting); what was held back flows again on ``passthrough()``;
- ``reset()``: every open connection is closed at once with a TCP reset (the
  mode stays as it was, so clients reconnect through it).

``connections`` counts the connections accepted so far. Use it as an async
context manager; it serves from a task group of its own and closes everything
on exit.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import Listener, SocketStream, TaskGroup

__all__ = ["FaultProxy"]


class FaultProxy:
    """A switchable TCP proxy on 127.0.0.1 (see the module docstring)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.upstream = port
        self.port = 0
        self.connections = 0
        self._flowing = anyio.Event()
        self._flowing.set()
        self._open: dict[anyio.CancelScope, tuple[SocketStream, SocketStream]] = {}
        self._tasks: TaskGroup | None = None
        self._listener: Listener[SocketStream] | None = None

    @property
    def mode(self) -> str:
        """``"pass"`` or ``"blackhole"``."""
        return "pass" if self._flowing.is_set() else "blackhole"

    def passthrough(self) -> None:
        """Forward bytes both ways (and release what a black hole held back)."""
        self._flowing.set()

    def blackhole(self) -> None:
        """Accept and keep connections but forward nothing."""
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def reset(self) -> None:
        """Close every open connection with a TCP reset."""
        for scope, streams in list(self._open.items()):
            for stream in streams:
                raw = stream.extra(SocketAttribute.raw_socket)
                # A socket closed already belongs to a connection on its way out.
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            scope.cancel()  # the streams close on the way out, with linger 0: a reset
        self._open.clear()

    async def __aenter__(self) -> FaultProxy:
        self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = self._listener.extra(SocketAttribute.local_port)
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._listener.serve, self._serve, self._tasks)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._tasks is not None
        assert self._listener is not None
        self._tasks.cancel_scope.cancel()
        try:
            return await self._tasks.__aexit__(kind, error, traceback)
        finally:
            await self._listener.aclose()

    async def _serve(self, client: SocketStream) -> None:
        self.connections += 1
        try:
            server = await anyio.connect_tcp(self.host, self.upstream)
        except OSError:
            await client.aclose()
            return
        with anyio.CancelScope() as scope:
            self._open[scope] = (client, server)
            try:
                async with client, server, anyio.create_task_group() as pumps:
                    pumps.start_soon(self._pump, client, server, pumps.cancel_scope)
                    pumps.start_soon(self._pump, server, client, pumps.cancel_scope)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # a side that went away: the connection is over
            finally:
                self._open.pop(scope, None)

    async def _pump(
        self, source: SocketStream, sink: SocketStream, done: anyio.CancelScope
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await source.receive()
                await self._flowing.wait()
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            done.cancel()
