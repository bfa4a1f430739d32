"""The fleet harness: real replica processes on a real server, faults on a schedule.

``run(server, profile, faults)`` starts ``profile.replicas`` processes
(``python -m bench.fleet._replica``), each reaching the server through a
``FaultProxy`` of its own, waits until they have joined and shared the
handlers out, applies each ``Fault`` at its time, stops every replica
gracefully at ``profile.duration``, then reads the audit and checks it
(``_audit.check``). Joined replicas are numbered on from ``profile.replicas``
(``r3`` is the first to join a fleet of three).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio

from bench.faultproxy import FaultProxy
from bench.fleet._audit import Audit, Event, Report, Rules, check, read

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["KINDS", "Fault", "Profile", "Result", "Server", "run"]

ROOT = Path(__file__).resolve().parent.parent.parent
"""The folder that holds the ``bench`` package: the replicas' working directory."""

FaultKind = Literal[
    "kill", "stop", "term", "join", "blackhole", "reset", "pause", "restart", "terminate"
]
KINDS: tuple[FaultKind, ...] = (
    "kill",
    "stop",
    "term",
    "join",
    "blackhole",
    "reset",
    "pause",
    "restart",
    "terminate",
)
"""Every kind of fault: what each does is in ``Fault``'s docstring."""


class Server(Protocol):
    """The backend server of a run: ``RedisServer``, ``PostgresServer`` or one like them."""

    @property
    def kind(self) -> Literal["redis", "postgres"]: ...

    @property
    def url(self) -> str: ...

    def restart(self) -> None: ...

    def pause(self, seconds: float) -> None: ...

    def terminate(self, application_name: str) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """One run's fleet and timings (seconds).

    ``replicas`` processes at the start, each running the same ``handlers``
    handlers (``h000``, ``h001``, ...) with ``cooler`` and executions of
    ``execution`` seconds, sync (a worker thread) or async; leases with
    ``ttl`` and ``renew`` (default ``ttl / 5``); ``grace`` for a graceful
    stop; ``duration`` from the moment the fleet has settled to the final
    stop; ``sample`` how often each replica notes what it owns; ``slack``
    the scheduling allowance of the spread check; ``settle_within`` how
    long the fleet may take to join and share out at the start.
    """

    replicas: int = 3
    handlers: int = 6
    ttl: float = 1.5
    renew: float | None = None
    cooler: float = 0.2
    execution: float = 0.1
    sync: bool = False
    grace: float = 10.0
    duration: float = 10.0
    sample: float = 0.05
    slack: float = 0.5
    settle_within: float = 30.0

    @property
    def renew_seconds(self) -> float:
        """``renew``, or its default ``ttl / 5``."""
        return self.renew if self.renew is not None else self.ttl / 5

    @property
    def names(self) -> tuple[str, ...]:
        """The handlers' names."""
        width = max(3, len(str(self.handlers - 1)))
        return tuple(f"h{index:0{width}d}" for index in range(self.handlers))

    def rules(self, *, restarts_lose_data: bool = False) -> Rules:
        """What the checks hold a run of this profile to (on a backend whose restart
        loses the data, or not)."""
        return Rules(
            ttl=self.ttl,
            renew=self.renew_seconds,
            cooler=self.cooler,
            execution=self.execution,
            slack=self.slack,
            restarts_lose_data=restarts_lose_data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One fault, ``at`` seconds after the fleet settled, on replica number ``replica``.

    - ``kill``: SIGKILL; ``stop``: SIGSTOP, SIGCONT ``seconds`` later;
      ``term``: SIGTERM (a graceful stop); ``join``: start one more replica;
    - ``blackhole``: the replica's proxy forwards nothing for ``seconds``
      (every replica's, a total outage, when ``replica`` is ``None``);
      ``reset``: the proxy resets the replica's connections;
    - ``pause``: Redis ``CLIENT PAUSE`` for ``seconds`` (every replica);
      ``restart``: the server restarts (Redis loses everything);
      ``terminate``: PostgreSQL ends the replica's connections
      (``pg_terminate_backend``, found by ``application_name``).
    """

    at: float
    kind: FaultKind
    replica: int | None = None
    seconds: float = 0.0
    on: Literal["start", "end"] | None = None
    """Wait, from ``at``, for the replica's next execution to start (or end), then strike."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """A run: its profile, what was recorded, the figures and violations, and its folder."""

    backend: str
    profile: Profile
    audit: Audit
    report: Report
    folder: Path
    started: float = field(default=0.0)
    """Seconds the fleet took to join and share out, before the schedule began."""

    def summary(self) -> dict[str, object]:
        """The figures as a JSON-able dict."""
        return {"backend": self.backend, "settled_in": round(self.started, 3)} | (
            self.report.summary()
        )


class _Replica:
    """One replica process, its proxy and its files."""

    def __init__(self, name: str, folder: Path, proxy: FaultProxy) -> None:
        self.name = name
        self.proxy = proxy
        self.audit = folder / f"{name}.jsonl"
        self.log = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._partial = b""
        self.ready = False
        self.owned: frozenset[str] = frozenset()
        self.seen = {"start": 0, "end": 0}
        """How many execution starts and ends the audit holds so far."""

    def spawn(self, config: dict[str, object]) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet._replica", json.dumps(config)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, number: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def poll(self) -> None:
        """Read what the replica appended since the last call (ready, owned)."""
        try:
            with open(self.audit, "rb") as audit:
                audit.seek(self._offset)
                data = audit.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            record = json.loads(line)
            if record["e"] == "ready":
                self.ready = True
            elif record["e"] == "owned":
                self.owned = frozenset(record["units"])
            elif record["e"] in self.seen:
                self.seen[record["e"]] += 1

    async def next_execution(self, edge: str, within: float) -> None:
        """Return once the replica's next execution starts (``edge`` ``start``) or ends."""
        self.poll()
        count = self.seen[edge]
        with anyio.fail_after(within):
            while self.seen[edge] == count:
                await anyio.sleep(0.002)
                self.poll()


class _Fleet:
    def __init__(
        self, server: Server, profile: Profile, folder: Path, stack: contextlib.AsyncExitStack
    ) -> None:
        self.server = server
        self.profile = profile
        self.folder = folder
        self.stack = stack
        self.group = f"fleet-{uuid.uuid4().hex[:12]}"
        self.schema = f"fleet_{uuid.uuid4().hex[:12]}"
        self.replicas: list[_Replica] = []
        self.proxies: list[FaultProxy] = []
        self.events: list[Event] = []

    def _through(self, proxy: FaultProxy, name: str) -> str:
        parts = urlsplit(self.server.url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
        query = parts.query
        if self.server.kind == "postgres":
            extra = urlencode({"application_name": name})
            query = f"{query}&{extra}" if query else extra
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    async def open_proxies(self, count: int) -> None:
        """One proxy per replica the run will have, opened here: they live in this task."""
        parts = urlsplit(self.server.url)
        for _ in range(count):
            proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 0)
            self.proxies.append(await self.stack.enter_async_context(proxy))

    def add(self) -> _Replica:
        name = f"r{len(self.replicas)}"
        proxy = self.proxies[len(self.replicas)]
        replica = _Replica(name, self.folder, proxy)
        profile = self.profile
        replica.spawn(
            {
                "backend": self.server.kind,
                "url": self._through(proxy, name),
                "schema": self.schema,
                "group": self.group,
                "ttl": profile.ttl,
                "renew": profile.renew_seconds,
                "identity": name,
                "handlers": list(profile.names),
                "cooler": profile.cooler,
                "execution": profile.execution,
                "sync": profile.sync,
                "grace": profile.grace,
                "audit": str(replica.audit),
                "sample": profile.sample,
            }
        )
        self.replicas.append(replica)
        return replica

    def fair(self) -> bool:
        for replica in self.replicas:
            replica.poll()
        live = [replica for replica in self.replicas if replica.alive()]
        if not live or not all(replica.ready for replica in live):
            return False
        total = self.profile.handlers
        counts = [len(replica.owned) for replica in live]
        together = frozenset().union(*(replica.owned for replica in live))
        low, high = total // len(live), math.ceil(total / len(live))
        return len(together) == total == sum(counts) and all(low <= c <= high for c in counts)

    async def settle(self) -> None:
        deadline = time.monotonic() + self.profile.settle_within
        while not self.fair():
            for replica in self.replicas:
                if not replica.alive():
                    raise RuntimeError(f"replica {replica.name} exited at the start: {replica.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the fleet did not share its handlers out within "
                    f"{self.profile.settle_within:g} s: see {self.folder}"
                )
            await anyio.sleep(0.05)

    async def apply(self, fault: Fault, begin: float) -> None:
        await anyio.sleep(max(0.0, begin + fault.at - time.monotonic()))
        target = None
        if fault.replica is not None and fault.kind != "join":
            target = self.replicas[fault.replica]
        name = target.name if target is not None else None
        if fault.on is not None:
            assert target is not None, f"on={fault.on!r} needs a replica"
            await target.next_execution(fault.on, self.profile.cooler + self.profile.execution + 10)
        t = time.monotonic_ns()
        until: int | None = None
        kind = fault.kind
        if kind == "join":
            joined = self.add()
            name = joined.name
        elif kind in ("kill", "stop", "term"):
            assert target is not None, f"{kind} needs a replica"
            number = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}
            target.signal(number[kind])
            if kind == "stop":
                await anyio.sleep(fault.seconds)
                target.signal(signal.SIGCONT)
                until = time.monotonic_ns()
        elif kind == "blackhole":
            proxies = [target.proxy] if target is not None else self.proxies
            for proxy in proxies:
                proxy.blackhole()
            await anyio.sleep(fault.seconds)
            for proxy in proxies:
                proxy.passthrough()
            until = time.monotonic_ns()
        elif kind == "reset":
            assert target is not None, "reset needs a replica"
            target.proxy.reset()
        elif kind == "pause":
            await anyio.to_thread.run_sync(self.server.pause, fault.seconds)
            until = t + round(fault.seconds * 1e9)
        elif kind == "restart":
            await anyio.to_thread.run_sync(self.server.restart)
            until = time.monotonic_ns()
        elif kind == "terminate":
            assert target is not None, "terminate needs a replica"
            await anyio.to_thread.run_sync(self.server.terminate, target.name)
        self.events.append(Event(kind=kind, t=t, replica=name, until=until))

    async def stop_all(self) -> None:
        for replica in self.replicas:
            replica.signal(signal.SIGCONT)
            replica.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.profile.grace + 10
        while any(replica.alive() for replica in self.replicas):
            if time.monotonic() > deadline:
                for replica in self.replicas:
                    replica.signal(signal.SIGKILL)
                break
            await anyio.sleep(0.05)
        for replica in self.replicas:
            if replica.process is not None:
                replica.process.wait(10)


async def run(
    server: Server,
    profile: Profile,
    faults: Sequence[Fault] = (),
    *,
    folder: Path | None = None,
) -> Result:
    """Run a fleet of ``profile`` on ``server`` through ``faults``; the audit, checked.

    Replicas' audits and logs, and the harness's ``events.jsonl``, go to
    ``folder`` (default: a new temporary folder, kept, named in the result).
    Every wait has a deadline: the start (``settle_within``), each fault,
    and the final stop (``grace`` plus 10 s, then SIGKILL).
    """
    last = max((fault.at + fault.seconds for fault in faults), default=0.0)
    if last > profile.duration:
        raise ValueError(f"faults run until {last:g} s, past the duration {profile.duration:g} s")
    folder = folder or Path(tempfile.mkdtemp(prefix="workit-fleet-"))
    folder.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        fleet = _Fleet(server, profile, folder, stack)
        try:
            joins = sum(fault.kind == "join" for fault in faults)
            await fleet.open_proxies(profile.replicas + joins)
            spawned = time.monotonic()
            for _ in range(profile.replicas):
                fleet.add()
            await fleet.settle()
            begin = time.monotonic()
            fleet.events.append(Event(kind="start", t=time.monotonic_ns()))
            with anyio.fail_after(profile.duration + 60):
                async with anyio.create_task_group() as tasks:
                    for fault in faults:
                        tasks.start_soon(fleet.apply, fault, begin)
                    await anyio.sleep(profile.duration)
            fleet.events.append(Event(kind="end", t=time.monotonic_ns()))
        finally:
            with anyio.CancelScope(shield=True):
                await fleet.stop_all()
    # The run is over: a blocking write delays nothing now.
    (folder / "events.jsonl").write_text(
        "".join(
            json.dumps({"kind": e.kind, "t": e.t, "replica": e.replica, "until": e.until}) + "\n"
            for e in fleet.events
        ),
        encoding="utf-8",
    )
    files = {replica.name: replica.audit for replica in fleet.replicas}
    logs = {replica.name: replica.log for replica in fleet.replicas}
    audit = read(files, handlers=profile.names, events=fleet.events, logs=logs)
    return Result(
        backend=server.kind,
        profile=profile,
        audit=audit,
        report=check(audit, profile.rules(restarts_lose_data=server.kind == "redis")),
        folder=folder,
        started=begin - spawned,
    )
