"""One replica of a steady fleet: ``python -m bench._fleet_steady_child PARAMS``.

``PARAMS`` is a JSON object: ``backend`` (``redis``, ``postgres`` or
``none``), ``url``, ``group``, ``handlers``, ``cooler``, ``ttl``,
``spread`` (whether the handlers' first executions are spread over one
cooler) and the window's bounds ``start`` and ``end`` in ``time.time()``
seconds. The replica runs ``handlers`` no-op async handlers in a
``ParallelWorker`` (under leases unless ``backend`` is ``none``), notes its
CPU time and the executions at both bounds, prints them as one JSON line
and stops.

Handlers that all start together and take no time stay in step: every
cooler, the event loop wakes once for all of them. Spread, each wakes it
on its own, as handlers of real work do (their executions last different
times) and as handlers handed over from replica to replica do (each is
due when its new owner claimed it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry

import workit
import workit.lease

if TYPE_CHECKING:
    from workit.lease import Leases

__all__ = ["main"]


class Counted:
    """A no-op handler; the executions of all are counted in one place.

    With ``delay``, its first execution waits that long (and is not counted):
    the next start a cooler later keeps the offset.
    """

    executed = 0

    def __init__(self, name: str, cooler: float, delay: float = 0.0) -> None:
        self.name = name
        self.cooler = cooler
        self._delay = delay

    async def ensure(self) -> None:
        if self._delay:
            delay, self._delay = self._delay, 0.0
            await anyio.sleep(delay)
            return
        Counted.executed += 1


def _leases(params: dict[str, object]) -> Leases | None:
    backend, url, group = params["backend"], str(params["url"]), str(params["group"])
    ttl = float(params["ttl"])  # type: ignore[arg-type]
    if backend == "redis":
        return workit.lease.Redis(url, group=group, ttl=ttl)
    if backend == "postgres":
        return workit.lease.Postgres(url, group=group, ttl=ttl)
    return None


async def _until(moment: float) -> None:
    await anyio.sleep(max(0.0, moment - time.time()))


async def _run(params: dict[str, object]) -> dict[str, object]:
    cooler = float(params["cooler"])  # type: ignore[arg-type]
    count = int(params["handlers"])  # type: ignore[call-overload]
    spread = cooler / count if params.get("spread") else 0.0
    handlers = [Counted(f"h{i}", cooler, i * spread) for i in range(count)]
    registry = workit.Registry("fleet", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    worker = workit.ParallelWorker(handlers, registry=registry, leases=_leases(params))
    async with anyio.create_task_group() as tasks:
        await tasks.start(worker.daemon)
        await _until(float(params["start"]))  # type: ignore[arg-type]
        owned0 = sum(handler.owned for handler in worker.status().handlers)
        cpu0, executed0 = time.process_time(), Counted.executed  # status() is not counted
        await _until(float(params["end"]))  # type: ignore[arg-type]
        cpu1, executed1 = time.process_time(), Counted.executed
        owned1 = sum(handler.owned for handler in worker.status().handlers)
        worker.stop()
    return {
        "pid": os.getpid(),
        "cpu_s": cpu1 - cpu0,
        "executions": executed1 - executed0,
        "owned_at_start": owned0,
        "owned_at_end": owned1,
    }


def main(argv: list[str]) -> int:
    """Run one replica through the window; print what it measured."""
    params = json.loads(argv[0])
    print(json.dumps(anyio.run(_run, params)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
