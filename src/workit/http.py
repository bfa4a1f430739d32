"""HTTP endpoints for a worker, as an ASGI app (extra ``workit-jobs[http]``).

``app(worker)`` serves:

- ``GET /``: a status page for operators, one self-contained HTML file that
  polls ``status`` next to it (so it works under a mount, at ``/worker`` and
  ``/worker/`` alike) and needs no network beyond this app;
- ``GET /metrics``: Prometheus exposition of the worker's metrics backends;
- ``GET /healthz``: 200 while the event loop answers;
- ``GET /readyz``: 200 once the worker is ready, 503 before and while stopping;
- ``GET /status``: ``worker.status()`` as JSON.

Mount it into a Starlette or FastAPI app, and let that app's lifespan run the
worker with ``lifespan(worker)``::

    api = FastAPI(lifespan=workit.http.lifespan(worker))
    api.mount("/worker", workit.http.app(worker))
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import importlib.resources
import re
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from workit.metrics import Prometheus

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Callable, Iterator
    from contextlib import AbstractAsyncContextManager

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from starlette.requests import Request

    from workit.worker import Worker

__all__ = ["ServerError", "app", "lifespan", "serve"]


class _Collectors:
    """The collectors of several Prometheus registries, as one to expose."""

    def __init__(self, registries: list[CollectorRegistry]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        # Families of the same name from several registries become one family:
        # an exposition may declare each name only once.
        families: dict[str, Metric] = {}
        for registry in self._registries:
            for family in registry.collect():
                known = families.get(family.name)
                if known is None:
                    families[family.name] = family
                else:
                    merged = families[family.name] = copy.copy(known)
                    merged.samples = [*known.samples, *family.samples]
        return iter(families.values())


def _prometheus_registries(worker: Worker) -> list[CollectorRegistry]:
    registries: dict[int, CollectorRegistry] = {}
    for backend in worker.metrics:
        if isinstance(backend, Prometheus):
            registries.setdefault(id(backend.registry), backend.registry)
    return list(registries.values())


_PAGE = "status_page.html"


@functools.cache
def _page() -> tuple[str, dict[str, str]]:
    """The status page and its response headers, read once from the package."""
    html = importlib.resources.files("workit").joinpath(_PAGE).read_text(encoding="utf-8")
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": _content_policy(html),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return html, headers


def _content_policy(html: str) -> str:
    """A policy letting the page run only its own inline code and talk only to its origin.

    The hashes pin the inline ``<script>`` and ``<style>`` blocks: were a
    server string ever to slip into the markup, the browser would not run it.
    """

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(block.encode()).digest()) for block in blocks)
        return " ".join(f"'sha256-{digest.decode()}'" for digest in digests)

    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {hashes('script')}",
            f"style-src {hashes('style')}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


class _Snapshot:
    """``worker.status_json()``, built once for the requests that arrive while it is."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._building: anyio.Event | None = None
        self._body = b""

    async def body(self) -> bytes:
        building = self._building
        if building is not None:
            await building.wait()
            return self._body
        self._building = building = anyio.Event()
        try:
            self._body = await self._worker.status_json()
        finally:
            self._building = None
            building.set()
        return self._body


def app(worker: Worker) -> Starlette:
    """An ASGI app: the status page ``/``, ``/metrics``, ``/healthz``, ``/readyz``, ``/status``.

    The app does not run the worker; ``lifespan(worker)`` or ``workit run`` does.
    """
    registries = _prometheus_registries(worker)
    collectors = _Collectors(registries)

    async def metrics(request: Request) -> Response:
        if not registries:
            return PlainTextResponse(
                "this worker's metrics are not recorded with Prometheus\n", status_code=404
            )
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        # Encoding thousands of series takes a while: keep it off the event loop.
        body = await anyio.to_thread.run_sync(encode, collectors)
        return Response(body, headers={"Content-Type": content_type})

    async def page(request: Request) -> Response:
        html, headers = _page()
        return HTMLResponse(html, headers=headers)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ready = worker.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    snapshot = _Snapshot(worker)

    async def status(request: Request) -> Response:
        return Response(await snapshot.body(), media_type="application/json")

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/status", status, methods=["GET"]),
        ]
    )


def lifespan(worker: Worker) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A Starlette/FastAPI ``lifespan`` that runs ``worker`` with the app.

    On startup it starts ``worker.daemon()`` and waits until it is ready; on
    shutdown it calls ``worker.stop()`` and waits for the daemon to return
    (running executions get the worker's grace period).
    """

    @asynccontextmanager
    async def run(_: Any) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            await tasks.start(worker.daemon, name="workit:daemon")
            try:
                yield
            finally:
                worker.stop()

    return run


class ServerError(Exception):
    """The HTTP server could not start (the address is in use, say)."""


@asynccontextmanager
async def serve(worker: Worker, host: str, port: int) -> AsyncIterator[None]:
    """Serve ``app(worker)`` with uvicorn on ``host:port`` while the block runs.

    Returns from ``__aenter__`` once the server listens; raises
    ``ServerError`` when it cannot. Signals are left to the caller.
    """
    import uvicorn

    settled = anyio.Event()
    failed = False

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the caller handles SIGINT and SIGTERM

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            settled.set()

    async def run_server() -> None:
        nonlocal failed
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind; it logged why
            failed = True
            settled.set()

    config = uvicorn.Config(
        app(worker), host=host, port=port, log_config=None, lifespan="off", access_log=False
    )
    server = Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_server, name="workit:http")
        await settled.wait()
        if not failed:
            try:
                yield
            finally:
                server.should_exit = True
    if failed:
        raise ServerError(f"the HTTP server could not start on {host}:{port}")
