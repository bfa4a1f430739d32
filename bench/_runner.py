"""Runs each measurement in a child process, one system at a time, and collects records.

Every record is a dict with ``scenario``, ``case``, ``system`` and
``status``: ``ok`` (with the measurements), ``skipped`` (the system has no
such feature), ``unavailable`` (the system is not installed) or ``error``
(the child failed or timed out; ``reason`` says how). The first record of a
run describes the machine and the sources measured (``scenario`` is ``meta``).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench._plan import workit_only
from bench._systems import SYSTEMS, unavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from bench._plan import Run
    from bench._scenarios import Record

__all__ = ["ROOT", "machine", "run"]

ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds the ``bench`` package: the children's working directory."""

_NO_DAG = "APScheduler has no DAG engine: not applicable"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(tree: Path = ROOT) -> dict[str, object] | None:
    """The commit of ``tree`` and whether its ``src`` had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=tree,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=tree,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "src_changed_files": len(changed)}


def machine(*, smoke: bool) -> Record:
    """The ``meta`` record: when, on what machine and with which versions."""
    return {
        "scenario": "meta",
        "status": "ok",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: _version(name) for name in ("workit", "anyio", "prometheus-client", "apscheduler")
        },
        "git": _git(),
        "smoke": smoke,
    }


@contextlib.contextmanager
def _snapshot(tree: Path = ROOT) -> Iterator[dict[str, str]]:
    """The children's environment, importing a copy of ``tree``'s ``src/workit`` made now.

    workit's sources may change while a run lasts minutes (an editable
    install reads them at each import); every child of a run measures the
    same copy. Without ``src/workit`` the installed workit is used as is.
    The bench code is always this checkout's.
    """
    source = tree / "src" / "workit"
    env = dict(os.environ)
    if not source.is_dir():
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="workit-bench-") as folder:
        shutil.copytree(
            source, Path(folder) / "workit", ignore=shutil.ignore_patterns("__pycache__")
        )
        paths = [folder, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
        yield env


def _child(
    run: Run, system: str, env: dict[str, str], profile: Path | None, source: str | None = None
) -> list[Record]:
    head: Record = {"scenario": run.scenario, "case": run.case, "system": system}
    if source is not None:
        head["source"] = source
    settings: dict[str, object] = {**run.params, "case": run.case}
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        label = f"{system} {source}" if source else system
        stem = re.sub(r"[^A-Za-z0-9]+", "_", f"{run.scenario} {run.case} {label}")
        settings["profile"] = str(profile / f"{stem}.txt")
    command = [sys.executable, "-m", "bench._child", run.scenario, system, json.dumps(settings)]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=run.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [{**head, "status": "error", "reason": f"timed out after {run.timeout:g} s"}]
    records: list[Record] = [
        {**json.loads(line), **({"source": source} if source else {})}
        for line in done.stdout.splitlines()
        if line.startswith("{")
    ]
    if done.returncode != 0 or not records:
        sys.stderr.write(done.stderr)  # the child's traceback, for whoever reads the log
        if any(record.get("status") == "error" for record in records):
            return records
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return [*records, {**head, "status": "error", "reason": tail[0]}]
    return records


def run(
    runs: Sequence[Run],
    *,
    smoke: bool,
    systems: Sequence[str] = SYSTEMS,
    rounds: int = 1,
    emit: Callable[[Record], None] | None = None,
    profile: Path | None = None,
    before: Path | None = None,
    plan: str | None = None,
) -> list[Record]:
    """The ``meta`` record, then each run with each system, in a child process each.

    With ``rounds`` > 1 each run is made that many times, the systems taking
    turns within each round, and every record says its ``round``. Every
    record is also passed to ``emit`` as soon as it is made.

    With ``before`` (another checkout's root), workit is measured twice in
    each round, from this checkout's ``src/workit`` (``source`` ``after``
    in its records) and from ``before``'s (``source`` ``before``), with the
    same bench code; the order of the systems turns by one each round.
    ``plan`` (the command's name) goes into the ``meta`` record, which the
    report reads to choose the README section.
    """
    records: list[Record] = []

    def report(record: Record) -> None:
        records.append(record)
        if emit is not None:
            emit(record)

    with contextlib.ExitStack() as stack:
        envs = {"after": stack.enter_context(_snapshot())}
        meta: Record = {**machine(smoke=smoke), "rounds": rounds}
        if plan is not None:
            meta["plan"] = plan
        entries: list[tuple[str, str | None]] = []
        for system in systems:
            if system == "workit" and before is not None:
                envs["before"] = stack.enter_context(_snapshot(before))
                entries += [("workit", "after"), ("workit", "before")]
            else:
                entries.append((system, None))
        if before is not None:
            meta["sources"] = {
                "after": {"path": str(ROOT), "git": _git()},
                "before": {"path": str(before), "git": _git(before)},
            }
        report(meta)
        for each in runs:
            for turn in range(1, rounds + 1):
                shift = (turn - 1) % len(entries) if before is not None else 0
                for system, source in entries[shift:] + entries[:shift]:
                    head: Record = {"scenario": each.scenario, "case": each.case, "system": system}
                    if source is not None:
                        head["source"] = source
                    reason = unavailable(system)
                    if reason is None and each.scenario == "dag" and system == "apscheduler":
                        reason, status = _NO_DAG, "skipped"
                    elif reason is None and system != "workit":
                        reason, status = workit_only(each), "skipped"
                    else:
                        status = "unavailable"
                    if reason is not None:
                        if turn == 1:
                            report({**head, "status": status, "reason": reason})
                        continue
                    env = envs[source or "after"]
                    for record in _child(each, system, env, profile, source):
                        report({**record, "round": turn} if rounds > 1 else record)
    return records
