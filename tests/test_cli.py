"""The ``workit`` command, run as a real process: run, once, graph, check and bad TARGETs."""

from __future__ import annotations

import contextlib
import html
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests.support import TOTAL

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

T = TypeVar("T")

WORKIT = (sys.executable, "-m", "workit")
REPO = Path(__file__).parents[1]
# No __pycache__ left in the repository by the example's import.
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
COMMAND_TIMEOUT = 30.0
START_TIMEOUT = 10.0
# The shutdown line: how many executions were cancelled and abandoned.
COUNTS = re.compile(r"(\d+) executions? cancelled and (\d+) abandoned")
STATUS_KEYS = {
    "name",
    "engine",
    "active",
    "running",
    "executions",
    "failures",
    "consecutive_failures",
    "last_started",
    "last_finished",
    "last_success",
    "next_run",
    "last_error",
}
TIMES = ("last_started", "last_finished", "last_success", "next_run")
# Localhost never goes through a proxy, whatever the environment says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Target modules, written into each test's own folder.

RUNNING = """\
    import workit


    class Tick:
        cooler = 0.05

        async def ensure(self):
            pass


    class Fails:
        cooler = 0.1

        def ensure(self):
            raise ValueError("disk full")


    class Step:
        def __init__(self, name):
            self.name = name

        def ensure(self):
            pass


    registry = workit.Registry("cli")
    worker = workit.ParallelWorker([Tick(), Fails()], registry=registry)


    def service():
        return [
            workit.ParallelWorker([Tick(), Fails()], registry=registry),
            workit.SequenceWorker(
                [[Step("first")], [Step("second")]], cooler=0.1, registry=registry
            ),
        ]
"""

STOPPING = """\
    import threading
    from pathlib import Path

    import anyio
    import workit

    HERE = Path(__file__).parent


    class Slow:
        \"\"\"Marks its start, then runs until the test creates the file `release`.\"\"\"

        cooler = 0.05

        async def ensure(self):
            (HERE / "started").touch()
            while not (HERE / "release").exists():
                await anyio.sleep(0.02)
            (HERE / "finished").touch()


    class Count:
        \"\"\"Adds a line to `count` at the start of every execution.\"\"\"

        cooler = 0.02

        async def ensure(self):
            with (HERE / "count").open("a") as file:
                file.write("x\\n")


    class Hang:
        \"\"\"Marks its start, then sleeps until cancelled.\"\"\"

        cooler = 1

        async def ensure(self):
            (HERE / "started").touch()
            try:
                await anyio.sleep_forever()
            finally:
                (HERE / "cancelled").touch()


    def hung(index):
        def hang():
            threading.Event().wait()

        return workit.Handler(hang, cooler=1, name=f"hung_{index}")


    registry = workit.Registry("cli")
    draining = workit.ParallelWorker([Slow(), Count()], registry=registry)
    hanging = workit.ParallelWorker([Hang()], registry=registry)
    hung_sync = workit.ParallelWorker([hung(index) for index in range(20)], registry=registry)
    hung_one = workit.ParallelWorker([hung(0)], registry=registry)
"""

MARKING = """\
    from pathlib import Path

    import workit

    HERE = Path(__file__).parent


    class Mark:
        cooler = 0.05

        async def ensure(self):
            (HERE / "started").touch()


    worker = workit.ParallelWorker([Mark()], registry=workit.Registry("cli"))
"""

FREEZE_COUNT = """\
    import gc
    from pathlib import Path

    import workit

    HERE = Path(__file__).parent


    class Report:
        cooler = 0.02
        executions = 0

        async def ensure(self):
            self.executions += 1
            (HERE / "frozen").write_text(f"{self.executions} {gc.get_freeze_count()}")


    worker = workit.ParallelWorker([Report()], registry=workit.Registry("cli"))
"""

PIPELINES = """\
    from pathlib import Path

    import workit

    HERE = Path(__file__).parent


    class Skip(Exception):
        \"\"\"Control flow: the registry ignores it.\"\"\"


    def record(name):
        with (HERE / "ran").open("a") as file:
            file.write(name + "\\n")


    class SyncOk:
        cooler = 0.01

        def ensure(self):
            record("sync_ok")


    class AsyncOk:
        cooler = 0.01

        async def ensure(self):
            record("async_ok")


    class Ignored:
        cooler = 0.01

        def ensure(self):
            record("ignored")
            raise Skip("nothing to do")


    class Broken:
        cooler = 0.01

        def ensure(self):
            record("broken")
            raise ValueError("disk full")


    class Step:
        def __init__(self, name, error=None):
            self.name = name
            self.error = error

        def ensure(self):
            record(self.name)
            if self.error is not None:
                raise self.error


    registry = workit.Registry("cli", ignore=lambda error: isinstance(error, Skip))
    all_ok = workit.ParallelWorker([SyncOk(), AsyncOk()], registry=registry)
    with_ignored = workit.ParallelWorker([SyncOk(), Ignored()], registry=registry)
    with_failure = workit.ParallelWorker([SyncOk(), Broken()], registry=registry)
    a, b, c, d = (Step(name) for name in "abcd")
    diamond = workit.SequenceWorker({a: [], b: [a], c: [a], d: [b, c]}, registry=registry)
    failing_pipeline = workit.SequenceWorker(
        [[Step("first")], [Step("middle", ValueError("disk full"))], [Step("last")]],
        registry=registry,
    )
    mixed = [
        workit.ParallelWorker([SyncOk()], registry=registry),
        workit.SequenceWorker([[Step("s1")], [Step("s2")]], cooler=2.5, registry=registry),
    ]
    passless = [
        workit.ParallelWorker([SyncOk()], registry=registry),
        workit.SequenceWorker([[Step("s3")]], cooler=0, registry=registry),
    ]
"""

ODD_NAMES = """\
    import workit

    quoted = workit.Handler(lambda: None, name='fetch "daily"')
    lines = workit.Handler(lambda: None, name="two\\nlines")
    marks = workit.Handler(lambda: None, name="a#quot; <c> & `d`")
    worker = workit.SequenceWorker(
        {quoted: [], lines: [quoted], marks: [lines]}, registry=workit.Registry("cli")
    )
"""

TARGETS = """\
    import workit


    class Tick:
        cooler = 1

        def ensure(self):
            pass


    class Tock:
        cooler = 1

        def ensure(self):
            pass


    def parallel(handler):
        return workit.ParallelWorker([handler], registry=workit.Registry("cli"))


    worker = parallel(Tick())
    workers = [parallel(Tick()), parallel(Tock())]
    number = 42
    empty = []
    mixed = [parallel(Tick()), 42]


    def factory():
        return parallel(Tick())


    def list_factory():
        return [parallel(Tick()), parallel(Tock())]


    def broken_factory():
        raise RuntimeError("factory broke")


    def wrong_factory():
        return "not a worker"


    def failing_factory():
        return workit.ParallelWorker([], registry=workit.Registry("cli"))
"""

BOOM = '''\
"""Fails while it is imported."""

raise RuntimeError("boom")
'''

MISSING_DEPENDENCY = "import nonexistent_module_xyz\n"

EMPTY_WORKER = """\
import workit

worker = workit.ParallelWorker([], registry=workit.Registry("cli"))
"""

ODD_TARGETS = """\
import workit


class Tick:
    cooler = 1

    def ensure(self):
        pass


worker = workit.ParallelWorker([Tick()], registry=workit.Registry("cli"))
twice = [worker, worker]


def __getattr__(name):
    raise RuntimeError(f"{name} failed to load")
"""

STRAGGLING = """\\
import atexit
import concurrent.futures
import threading
import time
from pathlib import Path

import workit

HERE = Path(__file__).parent
pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
atexit.register(lambda: (HERE / "atexit").write_text(str(time.monotonic())))


def finish():
    time.sleep(1)
    (HERE / "finished").write_text(str(time.monotonic()))


class Straggler:
    \"\"\"Uses a thread pool, and starts a thread of its own that works for a second.\"\"\"

    cooler = 3600

    def ensure(self):
        pool.submit(sum, [1, 2]).result()
        threading.Thread(target=finish, name="straggler").start()
        (HERE / "started").touch()


worker = workit.ParallelWorker([Straggler()], registry=workit.Registry("cli"))
"""


TWO_PIPELINES = """\
import workit


class Step:
    def __init__(self, name):
        self.name = name

    def ensure(self):
        pass


registry = workit.Registry("cli")
a, b, c = Step("a"), Step("b"), Step("c")
pipelines = [
    workit.SequenceWorker([[a], [b]], registry=registry),
    workit.SequenceWorker([[c]], registry=registry),
]
"""

ASKING_FAILS = """\
import workit


class NoConfig:
    def cooler(self):
        raise RuntimeError("no cooler configured")

    def timeout(self):
        raise LookupError("no timeout configured")

    def ensure(self):
        pass


worker = workit.ParallelWorker([NoConfig()], registry=workit.Registry("cli"))
"""


def write(folder: Path, name: str, source: str) -> Path:
    """``source`` (dedented) as ``folder/name``."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def workit(
    *args: str, cwd: Path, command: Sequence[str] = WORKIT
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion, bounded."""
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The ``Error: ...`` line of a refused TARGET: exit 2, one line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def cells(output: str) -> list[list[str]]:
    """Each line of a printed table, split into its cells (two or more spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def outcomes(output: str) -> dict[str, tuple[str, str]]:
    """``once``'s table: each handler's outcome and duration."""
    header, *rows = cells(output)
    assert header[0] == "handler", header
    assert "outcome" in header, header
    outcome = header.index("outcome")
    table: dict[str, tuple[str, str]] = {}
    for row in rows:
        padded = [*row, *[""] * (len(header) - len(row))]
        table[padded[0]] = (padded[outcome], padded[-1])
    return table


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str) -> tuple[int, str] | None:
    """Status and body of ``GET url``, or ``None`` while nothing answers."""
    try:
        with OPENER.open(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except OSError:
        return None


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, read from /proc."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports: set[int] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if table.exists():
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def assert_utc(value: object) -> None:
    """``value`` is ``None`` or an ISO-8601 time in UTC."""
    if value is not None:
        assert isinstance(value, str), value
        moment = datetime.fromisoformat(value)
        assert moment.utcoffset() == timedelta(0), value


def assert_handler_schema(handler: dict[str, Any]) -> None:
    """One ``/status`` handler entry has every field, each of its type."""
    assert set(handler) >= STATUS_KEYS, handler
    assert isinstance(handler["name"], str)
    assert handler["engine"] in ("parallel", "sequence")
    assert handler["active"] is None or isinstance(handler["active"], bool)
    assert isinstance(handler["running"], bool)
    for key in ("executions", "failures", "consecutive_failures"):
        assert type(handler[key]) is int, (key, handler)
        assert handler[key] >= 0
    for key in TIMES:
        assert_utc(handler[key])
    error = handler["last_error"]
    if error is not None:
        assert set(error) == {"type", "message"}, error
        assert all(isinstance(text, str) for text in error.values())


class Service:
    """A ``workit run`` process: its log files and its HTTP port."""

    def __init__(self, process: subprocess.Popen[bytes], logs: Path, port: int) -> None:
        self.process = process
        self.logs = logs
        self.port = port

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return (self.logs / "stderr.log").read_text(encoding="utf-8", errors="replace")

    @property
    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return (self.logs / "stdout.log").read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> tuple[int, str] | None:
        """``GET path`` on the process's HTTP server."""
        return http_get(f"http://127.0.0.1:{self.port}{path}")

    def status(self) -> dict[str, Any]:
        """``/status``, decoded."""
        answer = self.get("/status")
        assert answer is not None
        assert answer[0] == 200, answer
        payload: dict[str, Any] = json.loads(answer[1])
        return payload

    def handlers(self) -> dict[str, dict[str, Any]]:
        """``/status`` handlers by name."""
        return {handler["name"]: handler for handler in self.status()["handlers"]}

    def wait_for(
        self, condition: Callable[[], T | None], what: str, timeout: float = START_TIMEOUT
    ) -> T:
        """Poll ``condition`` until it is true while the process runs, bounded."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(
                    f"workit exited ({self.process.returncode}) waiting for {what}:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n{self.stderr}")
            time.sleep(0.02)

    def wait_ready(self) -> bool:
        """Wait for /readyz 200; ``False`` when another process took the port meanwhile."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            answer = self.get("/readyz")
            if answer is not None and answer[0] == 200:
                return True
            if self.process.poll() is not None:
                if "address already in use" in self.stderr:
                    return False
                raise AssertionError(f"workit exited before it was ready:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz not 200 within {START_TIMEOUT} s:\n{self.stderr}")
            time.sleep(0.02)

    def readyz(self) -> int | None:
        """The status code of ``/readyz``."""
        answer = self.get("/readyz")
        return None if answer is None else answer[0]

    def send(self, signum: signal.Signals) -> float:
        """Send ``signum``; return the ``time.monotonic()`` it was sent at."""
        self.process.send_signal(signum)
        return time.monotonic()

    def wait_exit(self, timeout: float) -> int:
        """The exit status, within ``timeout`` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"workit still runs {timeout} s later:\n{self.stderr}") from None

    def counts(self) -> tuple[int, int]:
        """Executions cancelled and abandoned, as the last shutdown line logged says."""
        found = COUNTS.findall(self.stderr)
        assert found, f"no shutdown line with the counts:\n{self.stderr}"
        cancelled, abandoned = found[-1]
        return int(cancelled), int(abandoned)


@contextlib.contextmanager
def running(
    logs: Path,
    target: str,
    *options: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    http: bool = True,
) -> Iterator[Service]:
    """``workit run TARGET`` for the block, ready when ``http``; killed if still running."""
    service: Service | None = None
    try:
        for _ in range(3):
            port = free_port()
            address = ["--host", "127.0.0.1", "--port", str(port)]
            if not http:
                address.append("--no-http")
            with (logs / "stdout.log").open("wb") as out, (logs / "stderr.log").open("wb") as err:
                process = subprocess.Popen(
                    [*WORKIT, "run", target, *address, *options],
                    cwd=logs if cwd is None else cwd,
                    env=ENV if env is None else env,
                    stdout=out,
                    stderr=err,
                )
            service = Service(process, logs, port)
            if not http or service.wait_ready():
                break
        else:
            raise AssertionError("three free ports were taken before workit could listen")
        yield service
    finally:
        if service is not None:
            if service.process.poll() is None:
                service.process.kill()
            service.process.wait(timeout=10)


def count_lines(path: Path) -> int:
    """How many lines ``path`` has (0 when it does not exist)."""
    return len(path.read_text().splitlines()) if path.exists() else 0


# workit run


def test_run_serves_metrics_health_and_readiness(tmp_path: Path) -> None:
    """`workit run` serves /healthz, /readyz and Prometheus /metrics on --host/--port only."""
    write(tmp_path, "jobs.py", RUNNING)
    with running(tmp_path, "jobs:worker") as service:
        service.wait_for(
            lambda: all(h["executions"] for h in service.handlers().values()), "executions"
        )
        assert service.get("/healthz") == (200, "ok\n")
        assert service.readyz() == 200
        answer = service.get("/metrics")
        assert answer is not None
        assert answer[0] == 200
        samples: dict[tuple[str, str], float] = {}
        for line in answer[1].splitlines():
            found = re.fullmatch(rf"{TOTAL}\{{(.*)\}} (\S+)", line)
            if found:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', found[1]))
                samples[labels["handler"], labels["success"]] = float(found[2])
        assert samples["tick", "true"] >= 1
        assert samples["fails", "false"] >= 1
        if sys.platform == "linux":
            assert listening_ports(service.process.pid) == {service.port}


def test_run_status_reports_every_handler(tmp_path: Path) -> None:
    """/status lists each handler of a factory's list target with the documented fields."""
    write(tmp_path, "jobs.py", RUNNING)
    with running(tmp_path, "jobs:service") as service:

        def twice() -> dict[str, dict[str, Any]] | None:
            # Two executions each: the first sequence pass has ended and planned the next.
            found = service.handlers()
            return found if all(h["executions"] >= 2 for h in found.values()) else None

        handlers = service.wait_for(twice, "two executions of every handler")
        payload = service.status()
    assert payload["ready"] is True
    assert list(handlers) == ["tick", "fails", "first", "second"]
    for handler in payload["handlers"]:
        assert_handler_schema(handler)
    tick, fails, first = handlers["tick"], handlers["fails"], handlers["first"]
    assert (tick["engine"], fails["engine"], first["engine"]) == (
        "parallel",
        "parallel",
        "sequence",
    )
    assert tick["active"] is True
    assert tick["failures"] == 0
    assert tick["last_error"] is None
    assert tick["last_started"] is not None
    assert tick["last_success"] is not None
    assert tick["next_run"] is not None
    assert fails["failures"] >= 1
    assert fails["consecutive_failures"] >= 1
    assert fails["last_success"] is None
    assert fails["last_error"] == {"type": "ValueError", "message": "disk full"}
    assert first["last_finished"] is not None
    assert first["next_run"] is not None


def test_run_readyz_is_503_while_stopping(tmp_path: Path) -> None:
    """After SIGTERM /readyz answers 503 while an execution drains; then exit 0."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:draining") as service:
        service.wait_for((tmp_path / "started").exists, "the slow handler to start")
        service.send(signal.SIGTERM)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        assert service.process.poll() is None
        (tmp_path / "release").touch()
        assert service.wait_exit(START_TIMEOUT) == 0
    assert service.counts() == (0, 0)


def test_run_stops_gracefully_on_sighup_as_on_sigterm(tmp_path: Path) -> None:
    """SIGHUP (a closed terminal) stops like SIGTERM: /readyz 503 while an execution
    drains, then exit 0 with the shutdown line."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:draining") as service:
        service.wait_for((tmp_path / "started").exists, "the slow handler to start")
        service.send(signal.SIGHUP)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        assert service.process.poll() is None
        (tmp_path / "release").touch()
        assert service.wait_exit(START_TIMEOUT) == 0
    assert "worker received SIGHUP, stopping gracefully" in service.stderr
    assert "workit exiting" in service.stderr
    assert service.counts() == (0, 0)
    assert (tmp_path / "finished").exists()


def test_run_stop_lets_running_execution_finish_and_starts_none(tmp_path: Path) -> None:
    """On SIGINT no new execution starts and the running one finishes within the grace."""
    write(tmp_path, "jobs.py", STOPPING)
    count = tmp_path / "count"
    with running(tmp_path, "jobs:draining", "--grace", "20") as service:
        service.wait_for((tmp_path / "started").exists, "the slow handler to start")
        service.wait_for(lambda: count_lines(count) >= 2, "the counting handler to loop")
        service.send(signal.SIGINT)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        stopped_at = count_lines(count)
        # Quiet period: time for several more executions, were any started (cooler 0.02 s).
        time.sleep(0.3)
        assert service.process.poll() is None
        (tmp_path / "release").touch()
        assert service.wait_exit(START_TIMEOUT) == 0
    assert (tmp_path / "finished").exists()
    assert count_lines(count) == stopped_at
    assert service.counts() == (0, 0)


def test_run_cancels_async_execution_after_grace(tmp_path: Path) -> None:
    """A hung async execution gets --grace seconds, then is cancelled; exit 0, 1 cancelled."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hanging", "--grace", "1") as service:
        service.wait_for((tmp_path / "started").exists, "the hanging handler to start")
        sent = service.send(signal.SIGTERM)
        assert service.wait_exit(5) == 0
        elapsed = time.monotonic() - sent
    assert 0.9 <= elapsed <= 2.0, elapsed
    assert (tmp_path / "cancelled").exists()
    assert service.counts() == (1, 0)


def test_run_abandons_twenty_hung_sync_handlers_within_grace(tmp_path: Path) -> None:
    """20 sync handlers hung forever: exit 0 within grace + 1 s, logging 20 abandoned."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hung_sync", "--grace", "1") as service:
        service.wait_for(
            lambda: [h["running"] for h in service.handlers().values()] == [True] * 20,
            "20 hung executions",
        )
        sent = service.send(signal.SIGTERM)
        assert service.wait_exit(5) == 0
        elapsed = time.monotonic() - sent
    assert elapsed <= 2.0, elapsed
    assert service.counts() == (0, 20)


def test_run_second_signal_cancels_at_once(tmp_path: Path) -> None:
    """A second signal cancels the draining execution at once, long before --grace 30."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hanging", "--grace", "30") as service:
        service.wait_for((tmp_path / "started").exists, "the hanging handler to start")
        service.send(signal.SIGTERM)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        sent = service.send(signal.SIGTERM)
        assert service.wait_exit(5) == 0
        elapsed = time.monotonic() - sent
    assert elapsed <= 2.0, elapsed
    assert (tmp_path / "cancelled").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_signals_while_the_http_server_shuts_down_are_caught(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A third signal soon after the second, while the HTTP server shuts down, is logged:
    the process still exits 0 with its shutdown line (it was killed by the signal)."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hanging", "--grace", "30") as service:
        service.wait_for((tmp_path / "started").exists, "the hanging handler to start")
        service.send(signum)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        service.send(signum)
        time.sleep(0.05)
        if service.process.poll() is None:
            service.send(signum)
        assert service.wait_exit(5) == 0
    assert service.counts() == (1, 0)


def test_run_second_signal_logs_the_cancelled_execution(tmp_path: Path) -> None:
    """After a second signal the shutdown line still counts the cancelled execution."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hanging", "--grace", "30") as service:
        service.wait_for((tmp_path / "started").exists, "the hanging handler to start")
        service.send(signal.SIGTERM)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        service.send(signal.SIGTERM)
        assert service.wait_exit(5) == 0
    assert service.counts() == (1, 0)


def test_run_second_signal_exits_despite_hung_sync_handler(tmp_path: Path) -> None:
    """A hung sync handler does not keep the process alive after a second signal."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hung_one", "--grace", "30") as service:
        service.wait_for(lambda: service.handlers()["hung_0"]["running"], "the hung execution")
        service.send(signal.SIGTERM)
        service.wait_for(lambda: service.readyz() == 503, "/readyz 503 while stopping")
        service.send(signal.SIGTERM)
        assert service.wait_exit(3) == 0
    assert service.counts() == (0, 1)


def test_run_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    """--log-format json: every line is a JSON object, uvicorn's too, with structured fields."""
    write(tmp_path, "jobs.py", RUNNING)
    options = ("--log-format", "json", "--log-level", "debug")
    with running(tmp_path, "jobs.py:worker", *options) as service:
        service.wait_for(
            lambda: all(h["executions"] for h in service.handlers().values()), "executions"
        )
        service.send(signal.SIGTERM)
        assert service.wait_exit(START_TIMEOUT) == 0
    lines = service.stderr.splitlines() + service.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in records)
    assert any(record.get("logger", "").startswith("uvicorn") for record in records)
    failures = [r for r in records if r.get("handler") == "fails" and "exc_info" in r]
    assert failures
    assert "ValueError: disk full" in failures[0]["exc_info"]
    assert any(r.get("pipelines") == 2 for r in records)
    assert any(
        r.get("handler") == "tick" and r.get("success") is True and "latency" in r for r in records
    )
    assert any(r.get("cancelled") == 0 and r.get("abandoned") == 0 for r in records)


def _frozen(folder: Path) -> tuple[int, int]:
    """Executions so far and the freeze count, as the handler of FREEZE_COUNT wrote last."""
    text = (folder / "frozen").read_text() if (folder / "frozen").exists() else ""
    executions, _, frozen = text.partition(" ")
    return (int(executions), int(frozen)) if frozen.isdigit() else (0, 0)


@pytest.mark.parametrize(
    ("options", "frozen"), [((), True), (("--no-gc-freeze",), False)], ids=["default", "off"]
)
def test_run_freezes_the_objects_alive_once_ready(
    tmp_path: Path, options: tuple[str, ...], frozen: bool
) -> None:
    """By default, once ready, the objects alive are frozen out of garbage collection
    (and it is logged); --no-gc-freeze leaves the collector as it is."""
    write(tmp_path, "jobs.py", FREEZE_COUNT)
    with running(tmp_path, "jobs:worker", "--log-level", "info", *options, http=False) as service:
        if frozen:
            service.wait_for(lambda: _frozen(tmp_path)[1] > 1000, "a freeze count")
        else:
            service.wait_for(lambda: _frozen(tmp_path)[0] >= 10, "ten executions")
            assert _frozen(tmp_path)[1] == 0
        service.send(signal.SIGTERM)
        assert service.wait_exit(START_TIMEOUT) == 0
    assert ("frozen out of garbage collection" in service.stderr) == frozen


def test_run_no_http_opens_no_port(tmp_path: Path) -> None:
    """--no-http runs the worker with no port open, and stops on SIGTERM."""
    write(tmp_path, "jobs.py", MARKING)
    with running(tmp_path, "jobs:worker", http=False) as service:
        service.wait_for((tmp_path / "started").exists, "an execution")
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", service.port))
        if sys.platform == "linux":
            assert listening_ports(service.process.pid) == set()
        service.send(signal.SIGTERM)
        assert service.wait_exit(START_TIMEOUT) == 0
    assert service.counts() == (0, 0)


def test_run_exits_as_python_does_past_threads_of_the_service(tmp_path: Path) -> None:
    """Threads of the service's own (a pool's idle workers, a thread finishing its work)
    are waited for at exit and the atexit handlers run, as at any exit: only threads of
    abandoned executions are left behind (test_run_abandons_twenty_hung_sync_handlers...)."""
    write(tmp_path, "jobs.py", STRAGGLING)
    with running(tmp_path, "jobs:worker", http=False) as service:
        service.wait_for((tmp_path / "started").exists, "the straggling thread to start")
        service.send(signal.SIGTERM)
        assert service.wait_exit(10) == 0
    assert service.counts() == (0, 0)
    assert "exiting past" not in service.stderr
    finished = float((tmp_path / "finished").read_text())
    assert float((tmp_path / "atexit").read_text()) >= finished


def test_run_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    """A port another process holds gives an error naming the address, not a traceback."""
    write(tmp_path, "jobs.py", MARKING)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        result = workit("run", "jobs:worker", "--port", port, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    assert f"127.0.0.1:{port}" in last


def test_run_example_service(tmp_path: Path) -> None:
    """The README's command runs the example: files get mirrored, SIGTERM exits 0."""
    directory = tmp_path / "example"
    env = {**ENV, "WORKIT_EXAMPLE_DIR": str(directory)}
    target = "examples/mirror_service.py:service"
    with running(tmp_path, target, cwd=REPO, env=env) as service:
        service.wait_for((directory / "mirror" / "note-0001.txt").exists, "a mirrored file")
        assert list(service.handlers()) == [
            "drop_files",
            "mirror_inbox",
            "clean_stale",
            "scan",
            "checksum",
            "write_report",
        ]
        service.send(signal.SIGTERM)
        assert service.wait_exit(START_TIMEOUT) == 0
    assert service.counts() == (0, 0)


@pytest.mark.parametrize("target", ["jobs:diamond", "jobs:passless"], ids=["alone", "in-a-list"])
def test_run_refuses_a_sequence_worker_without_cooler(tmp_path: Path, target: str) -> None:
    """A TARGET with a SequenceWorker without cooler (None or 0) exits 2 before running anything,
    saying it would run no pass and pointing to `workit once`."""
    write(tmp_path, "jobs.py", PIPELINES)
    line = one_line_error(workit("run", target, "--no-http", cwd=tmp_path))
    assert "SequenceWorker of " in line
    assert "has no cooler" in line
    assert f"`workit once {target}`" in line
    assert not (tmp_path / "ran").exists()


def test_run_exit_line_counts_one_execution_in_the_singular(tmp_path: Path) -> None:
    """The exit line says "1 execution cancelled", not "1 executions"."""
    write(tmp_path, "jobs.py", STOPPING)
    with running(tmp_path, "jobs:hanging", "--grace", "0", http=False) as service:
        service.wait_for((tmp_path / "started").exists, "the hanging handler to start")
        service.send(signal.SIGTERM)
        assert service.wait_exit(START_TIMEOUT) == 0
    assert "workit exiting: 1 execution cancelled and 0 abandoned" in service.stderr


def test_json_log_time_is_iso_8601_in_utc(tmp_path: Path) -> None:
    """--log-format json gives each record's `time` in ISO-8601 UTC to the millisecond, +00:00."""
    write(tmp_path, "jobs.py", PIPELINES)
    before = datetime.now(UTC)
    result = workit("once", "jobs:with_failure", "--log-format", "json", cwd=tmp_path)
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records, result.stderr
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"]), record
        moment = datetime.fromisoformat(record["time"])
        assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)


# workit once


def test_once_all_succeed(tmp_path: Path) -> None:
    """`once` runs each parallel handler exactly once, lists it with a duration, exits 0."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("once", "jobs:all_ok", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = outcomes(result.stdout)
    assert set(table) == {"sync_ok", "async_ok"}
    for outcome, duration in table.values():
        assert outcome == "ok"
        assert float(duration) >= 0
    assert sorted((tmp_path / "ran").read_text().split()) == ["async_ok", "sync_ok"]


def test_once_ignored_error_counts_as_success(tmp_path: Path) -> None:
    """An exception the registry's ignore filter matches still exits 0."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("once", "jobs:with_ignored", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    table = outcomes(result.stdout)
    assert set(table) == {"sync_ok", "ignored"}
    assert table["ignored"][0].startswith("ok"), table
    assert "fail" not in table["ignored"][0]


def test_once_failure_exits_1(tmp_path: Path) -> None:
    """A failing handler exits 1 and its row shows the exception."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("once", "jobs:with_failure", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    table = outcomes(result.stdout)
    assert table["sync_ok"][0] == "ok"
    assert "ValueError" in table["broken"][0]
    assert "disk full" in table["broken"][0]
    assert "Traceback" not in result.stdout


def test_once_runs_one_sequence_pass(tmp_path: Path) -> None:
    """A sequence TARGET runs one pass: every handler once, in dependency order."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("once", "jobs:diamond", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(outcomes(result.stdout)) == {"a", "b", "c", "d"}
    ran = (tmp_path / "ran").read_text().split()
    assert ran[0] == "a"
    assert sorted(ran[1:3]) == ["b", "c"]
    assert ran[3:] == ["d"]


def test_once_failed_pass_lists_every_handler(tmp_path: Path) -> None:
    """A failed pass exits 1; the table lists the handlers after the failure too."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("once", "jobs:failing_pipeline", cwd=tmp_path)
    assert result.returncode == 1
    table = outcomes(result.stdout)
    assert list(table) == ["first", "middle", "last"]
    assert table["first"][0] == "ok"
    assert "disk full" in table["middle"][0]
    assert not table["last"][0].startswith("ok")
    assert (tmp_path / "ran").read_text().split() == ["first", "middle"]


def test_once_list_target_runs_each_worker(tmp_path: Path) -> None:
    """A list TARGET runs each of its workers once."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("once", "jobs:mixed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(outcomes(result.stdout)) == {"sync_ok", "s1", "s2"}
    ran = (tmp_path / "ran").read_text().split()
    assert sorted(ran) == ["s1", "s2", "sync_ok"]
    assert ran.index("s1") < ran.index("s2")


# workit graph

DIAMOND_TEXT = "a\nb <- a\nc <- a\nd <- b, c\n"
DIAMOND_MERMAID = """\
flowchart TD
    n0["a"]
    n1["b"]
    n2["c"]
    n3["d"]
    n0 --> n1
    n0 --> n2
    n1 --> n3
    n2 --> n3
"""
DIAMOND_DOT = """\
digraph workit {
    rankdir=LR;
    "a";
    "b";
    "c";
    "d";
    "a" -> "b";
    "a" -> "c";
    "b" -> "d";
    "c" -> "d";
}
"""


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), DIAMOND_TEXT),
        (("--format", "text"), DIAMOND_TEXT),
        (("--format", "mermaid"), DIAMOND_MERMAID),
        (("--format", "dot"), DIAMOND_DOT),
    ],
    ids=["default", "text", "mermaid", "dot"],
)
def test_graph_draws_the_diamond(tmp_path: Path, options: tuple[str, ...], expected: str) -> None:
    """`graph` prints the sequence DAG in each format."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("graph", "jobs:diamond", *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_graph_draws_every_sequence_worker_of_a_list(tmp_path: Path) -> None:
    """A TARGET with two sequence workers prints both graphs, a blank line between them."""
    write(tmp_path, "jobs.py", TWO_PIPELINES)
    result = workit("graph", "jobs:pipelines", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a\nb <- a\n\nc\n"


def test_graph_without_sequence_worker_exits_2(tmp_path: Path) -> None:
    """A TARGET with no sequence worker has no graph: a one-line error, exit 2."""
    write(tmp_path, "jobs.py", PIPELINES)
    line = one_line_error(workit("graph", "jobs:all_ok", cwd=tmp_path))
    assert "jobs:all_ok" in line


def mermaid_text(label: str) -> str:
    """What Mermaid shows for a quoted label: `#quot;`, `#35;` and such as characters,
    `<br>` as a line break."""

    def character(code: re.Match[str]) -> str:
        return chr(int(code[1])) if code[1].isdigit() else html.unescape(f"&{code[1]};")

    return re.sub(r"#(\w+);", character, label.replace("<br>", "\n"))


def test_graph_mermaid_escapes_quotes_and_newlines(tmp_path: Path) -> None:
    """Names with quotes, newlines, `#...;`, <, >, & and backticks give labels that read back."""
    write(tmp_path, "jobs.py", ODD_NAMES)
    result = workit("graph", "jobs:worker", "--format", "mermaid", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *nodes, first_edge, second_edge = result.stdout.splitlines()
    assert header == "flowchart TD"
    labels = []
    for node in nodes:
        found = re.fullmatch(r'    (n\d+)\["([^"`<>&]*(?:<br>[^"`<>&]*)*)"\]', node)
        assert found, node
        labels.append(mermaid_text(found[2]))
    assert labels == ['fetch "daily"', "two\nlines", "a#quot; <c> & `d`"]
    assert (first_edge, second_edge) == ("    n0 --> n1", "    n1 --> n2")


# workit check


def test_check_lists_engine_handler_and_cooler(tmp_path: Path) -> None:
    """`check` lists every handler with its engine and cooler, and exits 0."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("check", "jobs:mixed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row[1]: row for row in cells(result.stdout) if len(row) >= 3}
    assert rows["sync_ok"][:3] == ["parallel", "sync_ok", "0.01"]
    assert rows["s1"][:2] == ["sequence", "s1"]
    assert rows["s1"][2].startswith("2.5")
    assert rows["s2"][:2] == ["sequence", "s2"]


def test_check_shows_the_error_of_a_cooler_or_timeout_that_raises(tmp_path: Path) -> None:
    """`check` shows what a handler's cooler() and timeout() raise in their columns, exit 0."""
    write(tmp_path, "jobs.py", ASKING_FAILS)
    result = workit("check", "jobs:worker", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, row, _ = cells(result.stdout)
    assert header == ["engine", "handler", "cooler", "timeout"]
    assert row == [
        "parallel",
        "no_config",
        "error: no cooler configured",
        "error: no timeout configured",
    ]


@pytest.mark.parametrize(
    ("target", "summary"),
    [
        ("targets:worker", "targets:worker: 1 handler in 1 engine"),
        ("jobs:mixed", "jobs:mixed: 3 handlers in 2 engines"),
    ],
    ids=["singular", "plural"],
)
def test_check_summary_counts_in_words(tmp_path: Path, target: str, summary: str) -> None:
    """`check` ends with how many handlers in how many engines, singular or plural."""
    write(tmp_path, "jobs.py", PIPELINES)
    write(tmp_path, "targets.py", TARGETS)
    result = workit("check", target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == summary


@pytest.mark.parametrize(
    ("target", "warned"),
    [("jobs:diamond", "a, b, c and 1 more"), ("jobs:passless", "s3"), ("jobs:mixed", None)],
    ids=["no-cooler", "cooler-0", "with-cooler"],
)
def test_check_warns_of_a_sequence_worker_without_cooler(
    tmp_path: Path, target: str, warned: str | None
) -> None:
    """`check` names a SequenceWorker without cooler (None or 0) in a warning line, and exits 0."""
    write(tmp_path, "jobs.py", PIPELINES)
    result = workit("check", target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    if warned is None:
        assert warnings == []
        return
    assert len(warnings) == 1, result.stdout
    assert f"SequenceWorker of {warned} has no cooler" in warnings[0]
    assert f"`workit once {target}`" in warnings[0]


@pytest.mark.parametrize(
    "target", ["empty_worker:worker", "targets:failing_factory"], ids=["module", "factory"]
)
def test_check_construction_error_exits_2(tmp_path: Path, target: str) -> None:
    """A worker that cannot be built gives its error on one line and exit 2."""
    write(tmp_path, "empty_worker.py", EMPTY_WORKER)
    write(tmp_path, "targets.py", TARGETS)
    line = one_line_error(workit("check", target, cwd=tmp_path))
    assert "ParallelWorker needs at least one handler" in line


# TARGETs


def test_help_lists_the_commands(tmp_path: Path) -> None:
    """`workit --help` lists run, once, graph and check."""
    result = workit("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "once", "graph", "check"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    """`workit --version` prints the version of the installed workit-jobs distribution."""
    result = workit("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"workit, version {importlib.metadata.version('workit-jobs')}\n"


def test_without_the_cli_extra_the_command_names_it(tmp_path: Path) -> None:
    """Without click, `python -m workit` exits 1 saying which extra to install."""
    hide_click = (
        "import runpy, sys; sys.modules['click'] = None; "
        "runpy.run_module('workit', run_name='__main__')"
    )
    result = workit(cwd=tmp_path, command=[sys.executable, "-c", hide_click])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install 'workit-jobs[cli]'" in result.stderr


@pytest.mark.parametrize(
    ("attribute", "handlers"),
    [
        ("worker", ["tick"]),
        ("workers", ["tick", "tock"]),
        ("factory", ["tick"]),
        ("list_factory", ["tick", "tock"]),
    ],
)
def test_target_kinds(tmp_path: Path, attribute: str, handlers: list[str]) -> None:
    """A worker, a list of workers and factories returning either are all TARGETs."""
    write(tmp_path, "targets.py", TARGETS)
    result = workit("check", f"targets:{attribute}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [row[1] for row in cells(result.stdout)[1:-1]] == handlers


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_target_file_path(tmp_path: Path, absolute: bool) -> None:
    """`path/to/file.py:attr` loads the worker from that file."""
    path = write(tmp_path / "project" / "jobs", "service.py", TARGETS)
    target = f"{path if absolute else 'project/jobs/service.py'}:worker"
    result = workit("check", target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tick" in result.stdout


def test_target_dotted_module_in_package(tmp_path: Path) -> None:
    """`package.module:attr` imports a module of a package in the current folder."""
    write(tmp_path / "pkg", "__init__.py", "")
    write(tmp_path / "pkg", "jobs.py", TARGETS)
    result = workit("check", "pkg.jobs:workers", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tock" in result.stdout


def test_console_script_imports_from_its_folder(tmp_path: Path) -> None:
    """The installed `workit` command imports modules of the folder it starts in."""
    write(tmp_path, "targets.py", TARGETS)
    script = Path(sys.executable).with_name("workit")
    result = workit("check", "targets:worker", cwd=tmp_path, command=[str(script)])
    assert result.returncode == 0, result.stderr
    assert "tick" in result.stdout


BAD_TARGETS = [
    pytest.param("nosuchmodule_xyz:worker", ["nosuchmodule_xyz"], id="missing-module"),
    pytest.param("missing/jobs.py:worker", ["missing/jobs.py"], id="missing-file"),
    pytest.param("targets:nothing_here", ["nothing_here"], id="missing-attribute"),
    pytest.param("targets", ["targets", "module:attr"], id="no-colon"),
    pytest.param("targets:number", ["int"], id="wrong-type"),
    pytest.param("targets:empty", ["empty"], id="empty-list"),
    pytest.param("targets:mixed", ["list", "int"], id="list-with-non-worker"),
    pytest.param("boom:worker", ["RuntimeError", "boom"], id="module-raises"),
    pytest.param("missing_dependency:worker", ["nonexistent_module_xyz"], id="module-import"),
    pytest.param("targets:broken_factory", ["RuntimeError", "factory broke"], id="factory"),
    pytest.param("targets:wrong_factory", ["str"], id="factory-wrong-type"),
    pytest.param("odd:lazy", ["reading", "lazy", "RuntimeError"], id="attribute-raises"),
    pytest.param("odd:twice", ["cannot run together", "given twice"], id="same-worker-twice"),
    pytest.param("boom.py:worker", ["boom.py", "RuntimeError", "boom"], id="file-raises"),
    pytest.param("data/notes.txt:worker", ["data/notes.txt", "not a Python file"], id="not-python"),
]


def write_targets(folder: Path) -> None:
    """The good and the bad target modules."""
    write(folder, "targets.py", TARGETS)
    write(folder, "boom.py", BOOM)
    write(folder, "missing_dependency.py", MISSING_DEPENDENCY)
    write(folder, "odd.py", ODD_TARGETS)
    write(folder / "data", "notes.txt", "not Python\n")


@pytest.mark.parametrize(("target", "fragments"), BAD_TARGETS)
def test_bad_target_is_a_one_line_error(tmp_path: Path, target: str, fragments: list[str]) -> None:
    """A bad TARGET gives exit 2 and one `Error:` line naming the problem, no traceback."""
    write_targets(tmp_path)
    line = one_line_error(workit("check", target, cwd=tmp_path))
    for fragment in fragments:
        assert re.search(rf"(?<!\w){re.escape(fragment)}(?!\w)", line), (fragment, line)


@pytest.mark.parametrize("command", ["run", "once", "graph", "check"])
def test_bad_target_exits_2_in_every_command(tmp_path: Path, command: str) -> None:
    """Every command refuses a bad TARGET the same way."""
    write_targets(tmp_path)
    one_line_error(workit(command, "targets:number", cwd=tmp_path))


def test_bad_target_with_json_logs_is_one_json_line(tmp_path: Path) -> None:
    """With --log-format json a bad TARGET is one JSON error record with its exit code, exit 2."""
    write_targets(tmp_path)
    result = workit("once", "targets:number", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert record["exit_code"] == 2
    assert "int" in record["message"]


def test_debug_shows_a_traceback(tmp_path: Path) -> None:
    """`--debug` shows the traceback of a bad TARGET."""
    write_targets(tmp_path)
    result = workit("--debug", "check", "boom:worker", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: boom" in result.stderr


def test_debug_traceback_reaches_the_users_code(tmp_path: Path) -> None:
    """`--debug` shows where in the user's module the import failed."""
    write_targets(tmp_path)
    result = workit("--debug", "check", "boom:worker", cwd=tmp_path)
    assert 'boom.py", line 3' in result.stderr, result.stderr
