"""The fault proxy itself: it forwards, black-holes, and resets on command."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import pytest

from bench.faultproxy import FaultProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import SocketStream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The proxy serves the asyncio-only drivers' tests."""
    return "asyncio"


async def echo(stream: SocketStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return


@contextlib.asynccontextmanager
async def echoing() -> AsyncIterator[FaultProxy]:
    """An echo server on loopback, behind a proxy."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, echo)
        async with FaultProxy("127.0.0.1", port) as front:
            yield front
        tasks.cancel_scope.cancel()


async def test_passthrough_forwards_both_ways() -> None:
    """In pass mode the echo comes back through the proxy."""
    async with echoing() as proxy, await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
        await stream.send(b"ping")
        with anyio.fail_after(2):
            assert await stream.receive() == b"ping"
        assert proxy.connections == 1


async def test_a_black_hole_holds_everything_until_passthrough() -> None:
    """In black-hole mode nothing comes back; on passthrough the held bytes flow."""
    async with echoing() as proxy, await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
        proxy.blackhole()
        assert proxy.mode == "blackhole"
        await stream.send(b"lost?")
        with anyio.move_on_after(0.05) as waited:
            await stream.receive()
        assert waited.cancelled_caught
        proxy.passthrough()
        with anyio.fail_after(2):
            assert await stream.receive() == b"lost?"


async def test_reset_closes_every_connection() -> None:
    """After a reset the client's connection is broken; a new one works."""
    async with echoing() as proxy:
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
            await stream.send(b"x")
            with anyio.fail_after(2):
                await stream.receive()
            proxy.reset()
            with anyio.fail_after(2):
                await stream.send(b"y")  # may still go out; the answer never comes
                with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
                    await stream.receive()
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as again:
            await again.send(b"z")
            with anyio.fail_after(2):
                assert await again.receive() == b"z"
        assert proxy.connections == 2


async def test_a_reset_skips_a_connection_already_closing() -> None:
    """A reset that meets a connection whose sockets are being closed (between their
    close and its end) leaves it be, instead of failing the caller on a closed socket."""
    async with echoing() as proxy, await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
        await stream.send(b"x")
        with anyio.fail_after(2):
            await stream.receive()
        (closing, _), *_ = proxy._open.values()
        await closing.aclose()  # as on the way out of a connection that ended
        proxy.reset()
