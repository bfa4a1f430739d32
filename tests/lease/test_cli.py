"""``workit run --leases`` and ``workit fleet``, as real processes against the real servers,
and their bad input."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.test_cli import ENV, REPO, Service, cells, free_port, running, workit, write

if TYPE_CHECKING:
    from pathlib import Path

EXAMPLE = "examples/mirror_service.py:service"
EXAMPLE_UNITS = {"drop_files", "mirror_inbox", "clean_stale", "pipeline"}
EXAMPLE_HANDLERS = {"drop_files", "mirror_inbox", "clean_stale", "scan", "checksum", "write_report"}
WAIT = 30.0
"""Seconds allowed for two replicas to settle: joins, one handoff at a run boundary."""

TARGETS = """\
    import anyio
    import workit
    import workit.lease


    class Tick:
        def __init__(self, name):
            self.name = name
            self.cooler = 0.1

        async def ensure(self):
            await anyio.sleep(0.01)


    class Step:
        def __init__(self, name):
            self.name = name

        def ensure(self):
            pass


    registry = workit.Registry("cli")
    worker = workit.ParallelWorker([Tick("a"), Tick("b")], registry=registry)


    def two_pipelines():
        return [
            workit.SequenceWorker([[Step("x")]], cooler=1, registry=registry),
            workit.SequenceWorker([[Step("y")]], cooler=1, registry=registry),
        ]


    def own_leases():
        return [
            workit.ParallelWorker([Tick("shared")], registry=registry),
            workit.ParallelWorker(
                [Tick("kept")], registry=registry, leases=workit.lease.Memory(group="own")
            ),
        ]
"""


@pytest.fixture(params=["redis", "postgres"])
def server(request: pytest.FixtureRequest) -> str:
    """The server a test runs against."""
    return str(request.param)


class Fleet:
    """A lease group of this test's own on ``server``: the options of ``run`` and ``fleet``."""

    def __init__(self, server: str, request: pytest.FixtureRequest) -> None:
        self.group = f"cli-{uuid.uuid4().hex[:12]}"
        self.server = server
        self.schema: str | None = None
        if server == "redis":
            self.url: str = request.getfixturevalue("redis_url")
        else:
            self.url = request.getfixturevalue("postgres_dsn")
            self.schema = request.getfixturevalue("postgres_schema")

    def run_options(self) -> list[str]:
        """The options of ``workit run`` that join this group (a short lease: quick tests)."""
        schema = [] if self.schema is None else ["--lease-schema", self.schema]
        return ["--leases", self.url, "--group", self.group, "--lease-ttl", "3", *schema]

    def fleet(self, *options: str, cwd: Path) -> Any:
        """``workit fleet`` on this group, run to completion."""
        schema = [] if self.schema is None else ["--schema", self.schema]
        return workit("fleet", self.url, "--group", self.group, *schema, *options, cwd=cwd)

    def roster(self, cwd: Path) -> dict[str, Any]:
        """``workit fleet --json``, decoded."""
        result = self.fleet("--json", cwd=cwd)
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def clean(self) -> None:
        if self.server == "redis":
            import contextlib

            import redis

            from workit.lease.redis import channel, keys

            with contextlib.closing(redis.Redis.from_url(self.url)) as client:
                client.delete(*keys(self.group), channel(self.group))


@pytest.fixture
def group(server: str, request: pytest.FixtureRequest) -> Any:
    one = Fleet(server, request)
    yield one
    one.clean()


def owned(service: Service) -> set[str]:
    """The handlers ``service`` owns, by its /status."""
    return {name for name, handler in service.handlers().items() if handler["owned"]}


def identity(service: Service) -> str:
    """The replica's identity, by the fleet block of its /status."""
    fleet = service.status()["fleet"]
    assert fleet is not None
    return str(fleet["identity"])


def lease_owned(service: Service) -> dict[str, float]:
    """``worker_lease_owned`` by handler, from the replica's /metrics."""
    answer = service.get("/metrics")
    assert answer is not None
    found = {}
    for line in answer[1].splitlines():
        match = re.fullmatch(r'worker_lease_owned\{env="[^"]*",handler="([^"]*)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def test_two_replicas_of_the_example_share_its_handlers(tmp_path: Path, group: Fleet) -> None:
    """Two `workit run --leases` processes of the README's example split its handlers, each
    owned by one of them; `workit fleet` shows both replicas and the owner of each handler,
    as text and as JSON, and /metrics has worker_lease_owned."""
    env_dir = {"WORKIT_EXAMPLE_DIR": str(tmp_path / "example")}
    one_logs, two_logs = tmp_path / "one", tmp_path / "two"
    one_logs.mkdir()
    two_logs.mkdir()
    env = {**ENV, **env_dir}
    options = group.run_options()
    with (
        running(one_logs, EXAMPLE, *options, cwd=REPO, env=env) as one,
        running(two_logs, EXAMPLE, *options, cwd=REPO, env=env) as two,
    ):

        def shared() -> bool:
            mine, theirs = owned(one), owned(two)
            return (
                bool(mine)
                and bool(theirs)
                and not mine & theirs
                and (mine | theirs == EXAMPLE_HANDLERS)
            )

        one.wait_for(shared, "the handlers shared out", timeout=WAIT)
        names = {identity(one), identity(two)}
        by_replica = {identity(one): owned(one), identity(two): owned(two)}
        text = group.fleet(cwd=tmp_path)
        document = group.roster(tmp_path)
        metrics = {identity(one): lease_owned(one), identity(two): lease_owned(two)}
    assert text.returncode == 0, text.stderr
    assert document["group"] == group.group
    assert {member["identity"] for member in document["members"]} == names
    assert len(document["members"]) == 4  # two engines in each replica: a member each
    owners = {unit["unit"]: unit["owner"] for unit in document["units"]}
    assert set(owners) == EXAMPLE_UNITS
    for name, handlers in by_replica.items():
        units = {unit for unit, owner in owners.items() if owner == name}
        assert units == {
            "pipeline" if h in {"scan", "checksum", "write_report"} else h for h in handlers
        }
        assert {h for h, value in metrics[name].items() if value == 1} == handlers
        assert set(metrics[name]) == EXAMPLE_HANDLERS
    lines = text.stdout.splitlines()
    assert lines[0] == (
        f"group {group.group!r} at {document['backend']}: 4 members, 4 of 4 handlers owned"
    )
    table = cells(text.stdout.split("\n\n")[2])
    assert table[0] == ["handler", "owner", "token", "running", "due"]
    assert {row[0]: row[1] for row in table[1:]} == owners
    members = cells(text.stdout.split("\n\n")[1])
    assert members[0] == ["member", "handlers", "owns", "lease left"]
    assert sorted(row[0] for row in members[1:]) == sorted([*names, *names])


def test_a_stopped_replica_leaves_the_fleet_to_the_other(tmp_path: Path, group: Fleet) -> None:
    """After SIGTERM one replica exits 0 having released its handlers: the other owns them all,
    and `workit fleet` shows it alone."""
    write(tmp_path, "jobs.py", TARGETS)
    one_logs, two_logs = tmp_path / "one", tmp_path / "two"
    one_logs.mkdir()
    two_logs.mkdir()
    options = group.run_options()
    with (
        running(one_logs, "jobs:worker", *options, cwd=tmp_path) as one,
        running(two_logs, "jobs:worker", *options, cwd=tmp_path) as two,
    ):
        one.wait_for(lambda: len(owned(one)) == len(owned(two)) == 1, "one each", timeout=WAIT)
        two.process.terminate()
        assert two.wait_exit(WAIT) == 0
        one.wait_for(lambda: owned(one) == {"a", "b"}, "both on the replica left", timeout=WAIT)
        document = group.roster(tmp_path)
    assert [member["identity"] for member in document["members"]] == [identity_of(one_logs)]
    assert {unit["unit"]: unit["owner"] for unit in document["units"]} == {
        "a": identity_of(one_logs),
        "b": identity_of(one_logs),
    }


def identity_of(logs: Path) -> str:
    """The identity a replica logged as its member id when it joined."""
    found = re.search(
        r"lease joined the fleet .*member='([^#']+)#", (logs / "stderr.log").read_text()
    )
    assert found, (logs / "stderr.log").read_text()
    return found[1]


@pytest.mark.parametrize("server", ["redis"])
def test_engines_with_leases_of_their_own_keep_them(tmp_path: Path, group: Fleet) -> None:
    """Only the engines built without leases join the group of --leases; the others keep
    theirs, and the log says so."""
    write(tmp_path, "jobs.py", TARGETS)
    with running(tmp_path, "jobs:own_leases", *group.run_options(), cwd=tmp_path) as service:
        service.wait_for(lambda: owned(service) == {"shared", "kept"}, "both owned", timeout=WAIT)
        document = group.roster(tmp_path)
        stderr = service.stderr
    assert [unit["unit"] for unit in document["units"]] == ["shared"]
    assert "engine 1 (parallel) keeps its own leases, group 'own'" in stderr


def test_fleet_of_an_empty_group(tmp_path: Path, group: Fleet) -> None:
    """A group nobody joined: no members, exit 0, and the JSON document is empty too."""
    text = group.fleet(cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        f"group {group.group!r} at {group.roster(tmp_path)['backend']}: 0 members, "
        "0 of 0 handlers owned"
    ]
    assert group.roster(tmp_path)["members"] == []


# Bad input


def usage_error(result: Any) -> str:
    """The last line of a click usage error: exit 2, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return str(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--leases", "redis://127.0.0.1"], "Error: --leases needs --group"),
        (["--group", "billing"], "Error: --group needs --leases"),
        (["--lease-ttl", "5"], "Error: --lease-ttl needs --leases"),
        (["--lease-schema", "jobs"], "Error: --lease-schema needs --leases"),
    ],
)
def test_lease_options_without_their_partner_are_usage_errors(
    tmp_path: Path, options: list[str], message: str
) -> None:
    """--leases and --group go together, and the other lease options need them: exit 2."""
    write(tmp_path, "jobs.py", TARGETS)
    result = workit("run", "jobs:worker", "--no-http", *options, cwd=tmp_path)
    assert usage_error(result).startswith(message)


@pytest.mark.parametrize(
    ("url", "scheme"), [("mysql://db/app", "'mysql://'"), ("memory://g", "'memory://'")]
)
def test_an_unknown_scheme_is_a_usage_error_naming_it(
    tmp_path: Path, url: str, scheme: str
) -> None:
    """A URL of another scheme: exit 2 naming it and the accepted ones, in run and fleet."""
    write(tmp_path, "jobs.py", TARGETS)
    accepted = "use redis://, rediss://, postgresql://, postgres://"
    ran = workit("run", "jobs:worker", "--leases", url, "--group", "g", cwd=tmp_path)
    looked = workit("fleet", url, "--group", "g", cwd=tmp_path)
    for result, option in ((ran, "'--leases'"), (looked, "'URL'")):
        line = usage_error(result)
        assert line.startswith(f"Error: Invalid value for {option}: lease URL scheme {scheme}")
        assert accepted in line


def test_a_schema_with_a_redis_url_is_a_usage_error(tmp_path: Path) -> None:
    """--lease-schema is PostgreSQL's: with redis:// it is refused, exit 2."""
    write(tmp_path, "jobs.py", TARGETS)
    options = ["--leases", "redis://127.0.0.1", "--group", "g", "--lease-schema", "jobs"]
    result = workit("run", "jobs:worker", *options, cwd=tmp_path)
    assert "schema is for PostgreSQL" in usage_error(result)


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [
        ("redis://127.0.0.1:6379/0", "redis", "workit-jobs[redis]"),
        ("postgresql://postgres@127.0.0.1/test", "psycopg", "workit-jobs[postgres]"),
    ],
)
@pytest.mark.parametrize("command", ["run", "fleet"])
def test_a_missing_driver_names_the_extra(
    tmp_path: Path, url: str, driver: str, extra: str, command: str
) -> None:
    """Without the driver of the URL's backend: exit 1, one line naming the extra."""
    write(tmp_path, "jobs.py", TARGETS)
    hide = (
        f"import runpy, sys; sys.modules[{driver!r}] = None; "
        "runpy.run_module('workit', run_name='__main__')"
    )
    args = (
        ["run", "jobs:worker", "--no-http", "--leases", url, "--group", "g"]
        if command == "run"
        else ["fleet", url, "--group", "g"]
    )
    result = workit(*args, cwd=tmp_path, command=[sys.executable, "-c", hide])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert f"pip install '{extra}'" in line


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_fleet_of_an_unreachable_backend_exits_1(tmp_path: Path, scheme: str) -> None:
    """Nothing listens at the URL: `workit fleet` exits 1 within its --timeout, saying it
    cannot read the group there, and prints nothing on stdout."""
    port = free_port()
    url = f"{scheme}://127.0.0.1:{port}" + ("/0" if scheme == "redis" else "/test")
    result = workit("fleet", url, "--group", "billing", "--timeout", "3", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot read the lease group 'billing' at {scheme}://127.0.0.1:")


def test_two_unnamed_pipelines_under_leases_are_refused(tmp_path: Path) -> None:
    """Two SequenceWorkers without a name would both be 'pipeline' to the fleet: exit 2, a
    one-line error saying to name them; nothing runs."""
    write(tmp_path, "jobs.py", TARGETS)
    options = ["--no-http", "--leases", "redis://127.0.0.1:1/0", "--group", "g"]
    result = workit("run", "jobs:two_pipelines", *options, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "are both known as 'pipeline' to the fleet of group 'g'" in line
    assert (
        'give each SequenceWorker a name of its own (SequenceWorker(..., name="nightly"))' in line
    )
    assert "lease" not in result.stderr.split("Error:")[0]  # nothing joined, nothing ran


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_fleet_of_a_silent_backend_gives_up_at_the_timeout(tmp_path: Path, scheme: str) -> None:
    """A server that accepts connections but never answers: exit 1 once --timeout is over,
    saying there was no answer within it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"{scheme}://127.0.0.1:{port}" + ("/0" if scheme == "redis" else "/test")
        started = time.monotonic()
        result = workit("fleet", url, "--group", "billing", "--timeout", "1", cwd=tmp_path)
        took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().endswith(": no answer within 1 s"), result.stderr
    assert 1 <= took < 10
