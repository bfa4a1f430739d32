"""One replica of a fleet under test: ``python -m bench.fleet._replica CONFIG``.

``CONFIG`` is a JSON object (see ``Replica.config()`` in ``_harness``): the
backend and its URL, the group and timings, how many handlers, their cooler
and how long one execution lasts, whether ``ensure`` is sync (a worker
thread) or async, and the audit file. The replica builds a real
``ParallelWorker`` under ``workit.lease.Redis`` or ``Postgres`` and runs it
until SIGTERM (a graceful stop) or until it is killed.

Every event goes to the audit file, one JSON line each, written with one
``os.write`` to a file opened for appending, so that a line is whole even
when the process dies right after it and nothing waits in a buffer:

- ``boot`` (``pid``), ``ready`` (the worker has joined; then, as ``workit run`` does,
  ``gc.freeze()``), ``exit``;
- ``start`` before an execution's work, with the handler (``h``) and the
  claim's token (``tok``); ``end`` after it, with ``how`` (``end``, or
  ``cancel`` when it was cancelled: the lease was lost or the grace ran out)
  and whether the claim was still ``valid``;
- ``owned``: the handlers this replica owns, each time that set changes
  (sampled every ``sample`` seconds).

Log lines (standard error, WARNING and up) start with the same clock.
Times (``t``) are ``time.monotonic_ns()``: on Linux one clock for every
process of the machine, so intervals of different replicas compare.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

import workit
import workit.lease

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["main"]


class Audit:
    """An append-only file of JSON lines, one ``os.write`` per line."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, event: str, **fields: object) -> None:
        """Append one event, stamped with ``time.monotonic_ns()``."""
        line = json.dumps({"e": event, "t": time.monotonic_ns(), **fields}, separators=(",", ":"))
        os.write(self._fd, line.encode() + b"\n")


def _claim() -> tuple[int, Callable[[], bool]]:
    claim = workit.lease.current()
    if claim is None:
        return -1, lambda: False
    return claim.token, claim.valid


def _async_handler(audit: Audit, name: str, execution: float) -> Callable[[], Any]:
    async def ensure() -> None:
        token, valid = _claim()
        audit.write("start", h=name, tok=token)
        how = "cancel"
        try:
            await anyio.sleep(execution)
            how = "end"
        finally:
            audit.write("end", h=name, tok=token, how=how, valid=valid())

    return ensure


def _sync_handler(audit: Audit, name: str, execution: float) -> Callable[[], None]:
    def ensure() -> None:
        token, valid = _claim()
        audit.write("start", h=name, tok=token)
        time.sleep(execution)
        audit.write("end", h=name, tok=token, how="end", valid=valid())

    return ensure


def leases(config: dict[str, Any]) -> workit.lease.Leases:
    """The lease backend the config names."""
    common: dict[str, Any] = {
        "group": config["group"],
        "ttl": config["ttl"],
        "renew": config["renew"],
        "identity": config["identity"],
    }
    if config["backend"] == "redis":
        return workit.lease.Redis(config["url"], **common)
    return workit.lease.Postgres(config["url"], schema=config["schema"], **common)


def worker(config: dict[str, Any], audit: Audit) -> workit.ParallelWorker:
    """A ``ParallelWorker`` of the config's handlers under its leases."""
    make = _sync_handler if config["sync"] else _async_handler
    handlers = [
        workit.Handler(make(audit, name, config["execution"]), cooler=config["cooler"], name=name)
        for name in config["handlers"]
    ]
    return workit.ParallelWorker(
        handlers,
        registry=workit.Registry("fleet"),
        leases=leases(config),
        grace=config["grace"],
    )


async def _sample(engine: workit.ParallelWorker, audit: Audit, every: float) -> None:
    owned: list[str] | None = None
    ready = False
    while True:
        # Each handler's ``owned`` follows the fleet's events (acquired, released, lost):
        # reading it costs no ``status()`` (100 ms and more at 10,000 handlers).
        now = sorted(handler.name for handler in engine.handlers if handler.owned)
        if not ready and engine.ready:
            ready = True
            audit.write("ready")
            # What ``workit run`` does once ready: a full collection of 10,000 handlers'
            # objects takes a replica's event loop ~0.3 s on this machine.
            gc.collect()
            gc.freeze()
        if now != owned:
            owned = now
            audit.write("owned", units=now)
        await anyio.sleep(every)


async def _orphaned(parent: int) -> None:
    """End the process once the harness that started it is gone (killed, say)."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        await anyio.sleep(1)


async def _run(config: dict[str, Any]) -> None:
    audit = Audit(config["audit"])
    audit.write("boot", pid=os.getpid(), replica=config["identity"])
    engine = worker(config, audit)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_orphaned, os.getppid())
        tasks.start_soon(_sample, engine, audit, config["sample"])
        await engine.run_until_signalled()
        tasks.cancel_scope.cancel()
    audit.write("exit", cancelled=engine.last_stop.cancelled, abandoned=engine.last_stop.abandoned)


def _stamp(record: logging.LogRecord) -> bool:
    """Stamp a log record with the audit's clock, so the checks can place it."""
    record.monotonic_ns = time.monotonic_ns()
    return True


def main(argv: list[str]) -> int:
    """Run one replica until SIGTERM."""
    (raw,) = argv
    config = json.loads(raw)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_stamp)
    handler.setFormatter(logging.Formatter("%(monotonic_ns)d %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    anyio.run(_run, config)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
