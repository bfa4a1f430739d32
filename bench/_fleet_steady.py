"""A fleet in steady state: backend round trips per replica, CPU per execution.

``measure()`` starts ``replicas`` processes (``bench._fleet_steady_child``)
that declare the same ``handlers`` handlers in one group, lets them settle,
then counts over a window what the backend served and what the replicas
spent:

- round trips: on Redis, the commands the clients sent (``INFO
  commandstats``, less the commands the lease script runs inside itself
  and the bench's own ``INFO``), on a server of the bench's own; on
  PostgreSQL, the calls of the lease function (``pg_stat_user_functions``,
  with ``track_functions`` on in a database of the bench's own: every sync
  is one call of it, one statement in autocommit). PostgreSQL publishes
  those counts about once a second, so a window of 30 s reads them to
  within a few per cent;
- CPU per execution: the replicas' CPU time in the window over the
  executions in it. With ``backend="none"`` the processes run the handlers
  without leases: the figures to compare with, once with the handlers in
  step (they start together and take no time, so the event loop wakes once
  a cooler for all of them: the cheapest case there is) and once with
  their starts spread over the cooler (each wakes the loop on its own, as
  handlers of real work do). A fleet lies between: a handler handed over
  runs when its new owner claims it, so the handlers of one replica fall
  into a few groups.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from bench._runner import ROOT
from workit.lease.postgres import FUNCTION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bench._scenarios import Record

__all__ = ["INNER", "STEADY", "markdown", "measure", "postgres_database", "private_redis", "run"]

INNER = frozenset(
    {
        *("get", "hdel", "hget", "hgetall", "hset", "incr", "publish"),
        *("set", "time", "zadd", "zrangebyscore", "zrem", "zremrangebyscore", "zscore"),
    }
)
"""The commands the Redis lease script calls inside itself: not round trips."""

DATABASE = "workit_fleet_bench"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` of the bench's own, keeping nothing on disk: its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            import redis

            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def _with_database(url: str, database: str) -> str:
    """``url`` (``postgresql://...``) naming ``database`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


@contextlib.contextmanager
def postgres_database(dsn: str) -> Iterator[str]:
    """A database of the bench's own on the server of ``dsn`` (made when missing): its DSN."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]
        ).fetchone()
        if found is None:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        # Count the calls of the lease function: each is one sync, one round trip.
        connection.execute(f"ALTER DATABASE {DATABASE} SET track_functions = 'pl'")
    own = _with_database(dsn, DATABASE)
    with psycopg.connect(own, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    yield own


def _round_trips(backend: str, url: str) -> int:
    """How many requests the backend has served so far (see the module docstring)."""
    if backend == "redis":
        import redis

        with contextlib.closing(redis.Redis.from_url(url)) as client:
            stats: dict[str, Any] = client.info("commandstats")
        return sum(
            int(value["calls"])
            for key, value in stats.items()
            if key.removeprefix("cmdstat_") not in INNER | {"info"}
        )
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = %s",
            [FUNCTION],
        ).fetchone()
    assert row is not None
    return int(row[0])


def measure(
    backend: str,
    url: str,
    *,
    replicas: int,
    handlers: int,
    cooler: float,
    ttl: float = 15.0,
    settle: float = 20.0,
    window: float = 30.0,
    spread: bool = False,
) -> Record:
    """One steady-state measurement (see the module docstring)."""
    group = f"steady-{uuid.uuid4().hex[:8]}"
    start = time.time() + settle
    end = start + window
    params = {
        "backend": backend,
        "url": url,
        "group": group,
        "handlers": handlers,
        "cooler": cooler,
        "ttl": ttl,
        "spread": spread,
        "start": start,
        "end": end,
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench._fleet_steady_child", json.dumps(params)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(replicas)
    ]
    try:
        time.sleep(max(0.0, start - time.time()))
        before = None if backend == "none" else _round_trips(backend, url)
        time.sleep(max(0.0, end - time.time()))
        after = None if backend == "none" else _round_trips(backend, url)
        results = []
        for child in children:
            out, _ = child.communicate(timeout=settle + window + 60)
            if child.returncode != 0:
                raise RuntimeError(f"a replica exited with {child.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    executions = sum(int(result["executions"]) for result in results)
    cpu = sum(float(result["cpu_s"]) for result in results)
    record: Record = {
        "fleet": "steady",
        "backend": backend,
        "replicas": replicas,
        "handlers": handlers,
        "cooler_s": cooler,
        "spread": spread,
        "ttl_s": ttl,
        "renew_s": ttl / 5,
        "window_s": window,
        "executions": executions,
        "cpu_us_per_execution": cpu / executions * 1e6 if executions else None,
        "cpu_cores": cpu / window,
        "owned": sorted(int(result["owned_at_end"]) for result in results),
    }
    if before is not None and after is not None:
        per_replica = (after - before) / replicas / window
        record["round_trips_per_replica_s"] = per_replica
        record["round_trips_per_renew"] = per_replica * ttl / 5
    return record


STEADY = (
    # (replicas, handlers, cooler): round trips at a cooler of a minute, CPU per execution
    # at a cooler of a second (100 executions a second per replica, then 3,333)
    (10, 1_000, 60.0),
    (3, 10_000, 60.0),
    (10, 1_000, 1.0),
    (3, 10_000, 1.0),
)
"""The steady fleets measured on each backend, beside one process without leases."""


def run(
    backends: list[str], postgres_dsn: str, *, smoke: bool, emit: Callable[[Record], None]
) -> list[Record]:
    """Every steady fleet of ``STEADY`` on each backend, then the fleet without leases."""
    sizes = [(2, 100, 60.0), (2, 100, 1.0)] if smoke else list(STEADY)
    records = []

    def window(cooler: float) -> tuple[float, float]:
        # How long to settle, and the window: one cooler holds one execution of every handler.
        return (6.0, 6.0) if smoke else (25.0, max(30.0, cooler))

    for backend in backends:
        with contextlib.ExitStack() as stack:
            if backend == "redis":
                url = stack.enter_context(private_redis())
            else:
                url = stack.enter_context(postgres_database(postgres_dsn))
            for replicas, handlers, cooler in sizes:
                settle, span = window(cooler)
                record = measure(
                    backend,
                    url,
                    replicas=replicas,
                    handlers=handlers,
                    cooler=cooler,
                    settle=settle,
                    window=span,
                )
                emit(record)
                records.append(record)
    # Without leases, for the fleets with the short cooler: as many processes, each
    # running its share (the same executions per process as under leases), in step
    # and spread, and one process running them all.
    short = min(cooler for _, _, cooler in sizes)
    baselines = {(1, handlers, short, False) for _, handlers, cooler in sizes if cooler == short}
    for r, h, cooler in sizes:
        if cooler == short:
            baselines |= {(r, h // r, short, False), (r, h // r, short, True)}
    for processes, each, cooler, spread in sorted(baselines):
        settle, span = window(cooler)
        record = measure(
            "none",
            "",
            replicas=processes,
            handlers=each,
            cooler=cooler,
            spread=spread,
            settle=settle,
            window=span,
        )
        emit(record)
        records.append(record)
    return records


def _number(record: Record, key: str) -> float | None:
    value = record.get(key)
    return None if value is None else float(cast("float", value))


def markdown(records: list[Record]) -> str:
    """The steady fleets as a table: round trips, owned handlers, CPU per execution."""
    # A fleet is compared with as many processes without leases, each running its share,
    # its handlers in step and spread.
    baselines = {
        (r["replicas"], r["cooler_s"], bool(r.get("spread"))): _number(r, "cpu_us_per_execution")
        for r in records
        if r["backend"] == "none" and r["replicas"] != 1
    }
    lines = [
        "| backend | replicas x handlers | cooler | round trips / replica / s | per renew "
        "| owned per replica | CPU per execution | vs as many processes without leases: "
        "in step | spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        cpu = _number(r, "cpu_us_per_execution")
        ratios = []
        for spread in (False, True):
            baseline = baselines.get((r["replicas"], r["cooler_s"], spread))
            if cpu and baseline and r["backend"] != "none":
                ratios.append(f"{cpu / baseline:.2f}x")
            else:
                ratios.append("")
        backend = str(r["backend"])
        if backend == "none":
            backend += ", spread" if r.get("spread") else ", in step"
        trips = _number(r, "round_trips_per_replica_s")
        per_renew = _number(r, "round_trips_per_renew")
        owned = cast("list[int]", r["owned"]) if r["backend"] != "none" else None
        cells = [
            backend,
            f"{r['replicas']} x {cast('int', r['handlers']):,}",
            f"{cast('float', r['cooler_s']):g} s",
            "" if trips is None else f"{trips:.2f}",
            "" if per_renew is None else f"{per_renew:.2f}",
            "" if owned is None else f"{min(owned)}-{max(owned)}",
            "" if cpu is None else f"{cpu:.1f} µs",
            *ratios,
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
