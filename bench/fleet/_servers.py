"""Private servers for the fleet harness: a Redis and a PostgreSQL of its own.

Each listens on a free port of 127.0.0.1 and keeps its files in a temporary
folder, so that restarting it, pausing it or cutting its connections
disturbs nothing else on the machine. Redis runs without persistence
(``--save "" --appendonly no``): a restart loses every key, as a cache
server's restart would. PostgreSQL is a cluster made by ``initdb``; when
this process runs as root (which ``initdb`` refuses) its programs run as
the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["PostgresServer", "RedisServer", "free_port", "missing_postgres", "missing_redis"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def _wait_for(port: int, within: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + within
    while not _answers(port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no server answered on port {port} within {within:g} s")
        time.sleep(0.02)


def _redis_binary() -> str | None:
    return os.environ.get("WORKIT_REDIS_SERVER") or shutil.which("redis-server")


def _postgres_bin() -> Path | None:
    configured = os.environ.get("WORKIT_POSTGRES_BIN")
    candidates = [configured] if configured else sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and not configured:
        candidates.append(str(Path(pg_ctl).parent))
    for candidate in reversed(candidates):
        folder = Path(candidate)
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def missing_redis() -> str | None:
    """Why a private Redis cannot be started here, or ``None``."""
    if _redis_binary() is None:
        return "redis-server is not installed: install it or set WORKIT_REDIS_SERVER to its path"
    return None


def missing_postgres() -> str | None:
    """Why a private PostgreSQL cluster cannot be made here, or ``None``."""
    if _postgres_bin() is None:
        return (
            "PostgreSQL's initdb and pg_ctl were not found: install the server package "
            "or set WORKIT_POSTGRES_BIN to the folder that holds them"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root, initdb needs runuser to run as the postgres user"
    return None


class RedisServer:
    """A ``redis-server`` of its own on a free port, without persistence.

    ``url`` is its address; ``restart()`` kills it and starts it again on
    the same port (empty); ``pause(seconds)`` sends ``CLIENT PAUSE``. Use it
    as a context manager (or call ``start()`` and ``close()``).
    """

    def __init__(self) -> None:
        binary = _redis_binary()
        if binary is None:
            raise RuntimeError(missing_redis())
        self._binary = binary
        self.port = free_port()
        self._folder = tempfile.mkdtemp(prefix="workit-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.kind: Literal["redis"] = "redis"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        command = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._folder,
            "--logfile",
            os.path.join(self._folder, "redis.log"),
        ]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        _wait_for(self.port, 10, self._process)

    def stop(self) -> None:
        """Kill the server at once (nothing is saved)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        """Kill the server and start an empty one on the same port."""
        self.stop()
        self.start()
        self.restarts += 1

    def pause(self, seconds: float) -> None:
        """``CLIENT PAUSE`` for ``seconds``: every client's commands wait meanwhile."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            client.client_pause(max(1, round(seconds * 1000)), all=True)
        finally:
            client.close()

    def terminate(self, application_name: str) -> int:
        """Not a Redis fault: ``pg_terminate_backend`` is PostgreSQL's."""
        raise NotImplementedError("terminate is a PostgreSQL fault (pg_terminate_backend)")

    def close(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class PostgresServer:
    """A PostgreSQL cluster of its own on a free port, made by ``initdb`` in a temporary folder.

    ``url`` is its address (user ``postgres``, trust authentication, database
    ``postgres``); ``restart()`` stops it at once (``-m immediate``, as a
    crash would) and starts it again, keeping every commit it acknowledged;
    ``terminate(application_name)`` ends the connections of one client with
    ``pg_terminate_backend``.
    """

    def __init__(self) -> None:
        folder = _postgres_bin()
        if folder is None:
            raise RuntimeError(missing_postgres())
        self._bin = folder
        self.port = free_port()
        self._folder = tempfile.mkdtemp(prefix="workit-postgres-")
        self._data = os.path.join(self._folder, "data")
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self._folder, "postgres")
        self.restarts = 0
        self._made = False
        self.kind: Literal["postgres"] = "postgres"

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pause(self, seconds: float) -> None:
        """Not a PostgreSQL fault: ``CLIENT PAUSE`` is Redis's."""
        raise NotImplementedError("pause is a Redis fault (CLIENT PAUSE)")

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self._bin / program), *arguments]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def _options(self) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            # Speed without loss: the machine does not crash, only the server, so WAL
            # written to the page cache survives; a commit waits for that write
            # (synchronous_commit on), so a restart loses no acknowledged commit.
            "fsync": "off",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        flags = " ".join(f"-c {name}={value}" for name, value in settings.items())
        return f"-p {self.port} -k {self._folder} {flags}"

    def start(self) -> None:
        """Make the cluster (the first time), start it and wait until it answers."""
        if not self._made:
            self._run(
                "initdb",
                "-D",
                self._data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            )
            self._made = True
        log = os.path.join(self._folder, "postgres.log")
        self._run("pg_ctl", "-D", self._data, "-o", self._options(), "-l", log, "-w", "start")
        _wait_for(self.port, 30)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: at once, recovering on the next start)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self._data, "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop the server at once and start it again."""
        self.stop()
        self.start()
        self.restarts += 1

    def terminate(self, application_name: str) -> int:
        """End every connection whose ``application_name`` is this; how many there were."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                [application_name],
            ).fetchall()
        return len(rows)

    def close(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
