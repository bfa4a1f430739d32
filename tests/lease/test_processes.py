"""API.md section 6 measured with real processes: replicas of ``bench.fleet`` on a private
Redis and a private PostgreSQL, faults on a schedule, the audit checked offline.

Three runs per backend, each shared by the tests that read it: ``churn`` (kill -9,
a join, SIGSTOP for 0.5x, 1.5x and 3x ttl, SIGTERM), ``network`` (a black hole,
resets, Redis CLIENT PAUSE or PostgreSQL pg_terminate_backend, a server restart)
and ``cadence`` (sync handlers whose cooler outlasts a failover, a kill and a
SIGTERM right after an execution, a join, a freeze mid-execution). Each run's
figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import anyio
import pytest

from bench.fleet import (
    Fault,
    PostgresServer,
    Profile,
    RedisServer,
    Result,
    missing_postgres,
    missing_redis,
    run,
)
from tests.lease.support import need_private_server

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from bench.fleet import Server

pytestmark = pytest.mark.timeout(150)

TTL = 1.5
RENEW = TTL / 5

CHURN = Profile(replicas=3, handlers=6, ttl=TTL, cooler=0.2, execution=0.3, duration=24)
CHURN_FAULTS = (
    Fault(at=1, kind="kill", replica=0),
    Fault(at=4.5, kind="join"),  # r3
    Fault(at=7.5, kind="stop", replica=1, seconds=0.5 * TTL),
    Fault(at=9, kind="stop", replica=2, seconds=1.5 * TTL, on="start"),
    Fault(at=14.5, kind="stop", replica=3, seconds=3 * TTL, on="start"),
    Fault(at=21, kind="term", replica=1),
)

NETWORK = Profile(replicas=3, handlers=6, ttl=TTL, cooler=0.2, execution=1.5, duration=22)


def network_faults(kind: str) -> tuple[Fault, ...]:
    """The black hole and resets, then the backend's own faults."""
    own = (
        (Fault(at=10.5, kind="pause", seconds=2 * TTL),)
        if kind == "redis"
        else (
            Fault(at=10.5, kind="terminate", replica=1),
            Fault(at=11, kind="terminate", replica=2),
            Fault(at=12, kind="blackhole", seconds=2 * TTL),  # every replica: a total outage
        )
    )
    return (
        Fault(at=0.5, kind="blackhole", replica=0, seconds=2 * TTL, on="start"),
        Fault(at=9.5, kind="reset", replica=1),
        Fault(at=10, kind="reset", replica=2),
        *own,
        Fault(at=17, kind="restart"),
    )


CADENCE = Profile(
    replicas=3, handlers=6, ttl=TTL, cooler=3.0, execution=0.2, sync=True, duration=26
)
CADENCE_FAULTS = (
    # Each fault waits for the previous one's takeover (a cooler after it): a failover or
    # handoff that the next fault overtakes is not assessed.
    Fault(at=0.5, kind="kill", replica=0, on="end"),
    Fault(at=9, kind="join"),  # r3
    Fault(at=12.5, kind="term", replica=1, on="end"),
    Fault(at=19.5, kind="stop", replica=2, seconds=3 * TTL, on="start"),
)


def _server(kind: str) -> Iterator[Server]:
    need_private_server(missing_redis() if kind == "redis" else missing_postgres())
    server = RedisServer() if kind == "redis" else PostgresServer()
    with server:
        yield server


@pytest.fixture(scope="module", params=["redis", "postgres"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A private server of the backend under test, for this module."""
    yield from _server(str(request.param))


def _tidy(result: Result) -> None:
    """Delete a run's folder, unless it holds the audit of a violation."""
    if not result.report.violations:
        shutil.rmtree(result.folder, ignore_errors=True)


def _run(server: Server, profile: Profile, faults: Sequence[Fault]) -> Result:
    result = anyio.run(run, server, profile, faults)
    print(json.dumps({"profile": profile.duration, **result.summary()}))
    return result


@pytest.fixture(scope="module")
def churn(server: Server) -> Iterator[Result]:
    """The churn run on this backend."""
    result = _run(server, CHURN, CHURN_FAULTS)
    yield result
    _tidy(result)


@pytest.fixture(scope="module")
def network(server: Server) -> Iterator[Result]:
    """The network run on this backend."""
    result = _run(server, NETWORK, network_faults(server.kind))
    yield result
    _tidy(result)


@pytest.fixture(scope="module")
def cadence(server: Server) -> Iterator[Result]:
    """The cadence run on this backend."""
    result = _run(server, CADENCE, CADENCE_FAULTS)
    yield result
    _tidy(result)


def violations(result: Result, *checks: str) -> list[str]:
    """The violations of ``checks``, with the run's folder to look into."""
    found = [f"{v.check}: {v.detail}" for v in result.report.violations if v.check in checks]
    return [*found, f"(audit in {result.folder})"] if found else []


# -- 1. one at a time ---------------------------------------------------------------


def test_no_overlap_through_churn(churn: Result) -> None:
    """Kill, join, freezes and SIGTERM: no two executions of a handler overlap."""
    assert churn.report.executions > 100
    assert violations(churn, "overlap") == []


def test_no_overlap_through_network_faults(network: Result) -> None:
    """Black hole, resets, pause or terminated connections, restart: no overlap."""
    assert violations(network, "overlap") == []


def test_a_sync_execution_frozen_past_ttl_is_the_only_exception(cadence: Result) -> None:
    """A replica frozen mid-execution (sync) for 3x ttl is excused, nothing else overlaps."""
    assert cadence.report.excused >= 1
    assert violations(cadence, "overlap") == []


# -- 2. one cadence --------------------------------------------------------------------


def test_cadence_is_kept_across_failover_and_handoff(cadence: Result) -> None:
    """A cooler longer than a failover: the new owner waits for it, after kill and SIGTERM."""
    assert cadence.report.token_changes >= 3
    assert violations(cadence, "cadence") == []


def test_cadence_is_kept_through_churn_and_network_faults(churn: Result, network: Result) -> None:
    """Every next start is at least a cooler after the previous end, on any replica."""
    assert violations(churn, "cadence") == []
    assert violations(network, "cadence") == []


# -- 3. fair share ---------------------------------------------------------------------


def test_fair_share_after_each_change_of_membership(churn: Result) -> None:
    """After a kill, a join, long freezes and a SIGTERM, floor/ceil within the bound."""
    assert violations(churn, "spread") == []
    assessed = churn.report.settles
    assert {label.split(":")[1] for label in assessed} >= {"kill", "join", "stop", "term"}


def test_fair_share_with_a_cooler_longer_than_a_failover(cadence: Result) -> None:
    """Handlers napping in a long cooler move as fast as idle ones: a stop is not delayed."""
    assert violations(cadence, "spread") == []
    assert {label.split(":")[1] for label in cadence.report.settles} >= {"kill", "join", "term"}


def test_fair_share_after_network_faults_and_a_restart(network: Result) -> None:
    """After a black hole, a pause or terminated connections, and a restart: fair again."""
    assert violations(network, "spread") == []
    assert any(":restart" in label for label in network.report.settles)


# -- 4. failover -----------------------------------------------------------------------


def test_failover_after_kill(churn: Result, cadence: Result) -> None:
    """Each handler of a killed replica runs again within ttl + renew + 1 s (or when due)."""
    assert churn.report.failovers
    assert cadence.report.failovers
    assert violations(churn, "failover") == []
    assert violations(cadence, "failover") == []
    assert max(churn.report.failovers) <= TTL + RENEW + 1


# -- 5. handoff ------------------------------------------------------------------------


def test_handoff_after_sigterm(churn: Result, cadence: Result) -> None:
    """The others take a stopping replica's handlers within 1 s, and run them when due."""
    assert churn.report.handoffs
    assert cadence.report.handoffs
    assert violations(churn, "handoff") == []
    assert violations(cadence, "handoff") == []


# -- 6. self-fencing -------------------------------------------------------------------


def test_a_cut_off_replica_fences_itself(network: Result) -> None:
    """Black-holed, its running execution is cancelled before its lease could expire and
    it starts nothing more; one error is logged for the outage (the check counts them)."""
    assert violations(network, "fence", "outage") == []
    assert network.report.fenced, "no execution was running when the lease could expire"
    assert network.report.fence_logs["r0"] >= 2  # the black hole, then the total outage


def test_a_total_outage_runs_nothing(network: Result) -> None:
    """Redis paused, or every replica cut off from PostgreSQL, for 2x ttl: nothing starts
    once the leases could have expired, and each replica logs one error for it."""
    assert network.report.outage_starts == 0
    assert violations(network, "outage") == []
    assert all(count >= 1 for count in network.report.fence_logs.values())


def test_a_frozen_replica_cancels_its_async_executions_on_resuming(churn: Result) -> None:
    """Frozen past ttl mid-execution: its async execution ends at once on SIGCONT."""
    assert churn.report.resumed
    assert max(churn.report.resumed) <= 0.3
    assert churn.report.fence_logs["r1"] == 0  # a freeze of 0.5x ttl is not an outage


# -- 7. fencing token ------------------------------------------------------------------


def test_tokens_increase_with_each_change_of_owner(churn: Result, cadence: Result) -> None:
    """Per handler the token grows at every change of owner and is never shared."""
    assert churn.report.token_changes >= 6
    assert violations(churn, "token") == []
    assert violations(cadence, "token") == []


def test_tokens_are_never_reused_across_a_restart(network: Result) -> None:
    """Through a server restart (Redis losing everything), tokens still only grow."""
    assert network.report.token_changes >= 3
    assert violations(network, "token") == []
