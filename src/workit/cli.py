"""The ``workit`` command: run, run once, draw or check the worker a TARGET names,
and look at a fleet of replicas."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import anyio
import click

from workit import _threads
from workit._duration import seconds
from workit._logging import configure, current_format
from workit._target import TargetError, load
from workit.errors import HandlerError, describe
from workit.http import ServerError, serve
from workit.lease import SCHEMES, from_url

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from workit._logging import LogFormat
    from workit.lease import Postgres, Redis, Roster
    from workit.status import EngineInfo, HandlerStatus
    from workit.worker import Engine, Worker

__all__ = ["main"]

log: logging.Logger = logging.getLogger("workit")
"""The logger of the command's own records: workit's, as the engines use by default."""

TARGET_HELP: str = (
    "TARGET is package.module:attr or path/to/file.py:attr, where attr is a worker, "
    "a list of workers (run combined) or a function of no arguments returning either."
)


class Failure(click.ClickException):
    """A one-line error, exit status 1; a JSON log line when the logs are JSON."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``Error: message`` to ``file`` (stderr), or log it when the logs are JSON."""
        if current_format() == "json":
            log.error(self.format_message(), extra={"exit_code": self.exit_code})
        else:
            super().show(file)


class BadTarget(Failure):
    """A TARGET that does not lead to a worker: exit status 2."""

    exit_code = 2


def _load(context: click.Context, target: str) -> Worker:
    try:
        return load(target)
    except TargetError as error:
        if context.obj["debug"]:
            raise
        raise BadTarget(str(error)) from None


def _count(number: int, noun: str) -> str:
    """``1 handler``, ``3 handlers``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _passless(engines: Sequence[EngineInfo]) -> list[EngineInfo]:
    """The sequence engines whose daemon runs no pass: no cooler."""
    return [engine for engine in engines if engine.kind == "sequence" and not engine.cooler]


def _no_pass(target: str, sequences: Sequence[EngineInfo]) -> str:
    """Why ``workit run`` would never run ``sequences``, and what to do instead."""

    def handlers(sequence: EngineInfo) -> str:
        names = [handler.name for handler in sequence.handlers]
        shown = ", ".join(names[:3])
        return f"{shown} and {len(names) - 3} more" if len(names) > 3 else shown

    one = len(sequences) == 1
    each = [handlers(sequence) for sequence in sequences]
    which = each[0] if one else ", of ".join(each[:-1]) + f" and of {each[-1]}"
    return (
        f"the {'SequenceWorker' if one else 'SequenceWorkers'} of {which} "
        f"{'has' if one else 'have'} no cooler, so `workit run` would run no pass of "
        f"{'it' if one else 'them'}: give {'it' if one else 'each'} a cooler "
        f"(SequenceWorker(..., cooler=60)), or run one pass with `workit once {target}`"
    )


_URL_HELP = ", ".join(f"{scheme}://" for scheme in SCHEMES)


def _lease_backend(
    url: str,
    *,
    group: str,
    ttl: float = 15,
    schema: str | None = None,
    hint: str = "--leases",
) -> Redis | Postgres:
    """The backend ``url`` names; a usage error for a bad URL or setting, a ``Failure``
    naming the extra to install for a missing driver."""
    try:
        return from_url(url, group=group, ttl=ttl, schema=schema)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=f"'{hint}'") from None
    except ImportError as error:
        raise Failure(str(error)) from None


def _check_lease_options(
    leases: str | None, group: str | None, ttl: float | None, schema: str | None
) -> None:
    """``--leases`` and ``--group`` go together; the other lease options need them."""
    if leases is not None and group is None:
        raise click.UsageError("--leases needs --group: the group the replicas share")
    if group is not None and leases is None:
        raise click.UsageError("--group needs --leases: the URL of the fleet's backend")
    for given, option in ((ttl, "--lease-ttl"), (schema, "--lease-schema")):
        if given is not None and leases is None:
            raise click.UsageError(f"{option} needs --leases")


def _lease(target: str, worker: Worker, leases: Redis | Postgres) -> None:
    """Give ``leases`` to each engine of ``worker`` built without leases.

    One backend object serves them all, as in code: each engine run is a
    member of its own, and the backend refuses two of one process that
    declare one unit; that is checked here first, so the refusal names the
    engines. Engines that have leases of their own keep them.
    """
    engines = worker.engines
    taken: dict[tuple[str, str], int] = {}
    for index, engine in enumerate(engines):
        if engine.leases is not None:
            log.info(
                "engine %d (%s) keeps its own leases, group %r",
                index,
                engine.engine,
                engine.leases.group,
                extra={"engine": engine.engine, "group": engine.leases.group},
            )
        group = leases.group if engine.leases is None else engine.leases.group
        for unit in engine.units:
            other = taken.setdefault((group, unit), index)
            if other != index:
                raise BadTarget(f"{target}: {_same_unit(engines, other, index, unit, group)}")
    for engine in engines:
        if engine.leases is None:
            engine.leases = leases


def _same_unit(engines: Sequence[Engine], first: int, second: int, unit: str, group: str) -> str:
    """Why two engines cannot lease ``unit`` in one group, and what to do."""
    kinds = f"the {engines[first].engine} engine {first} and the {engines[second].engine} engine"
    fix = "give the handlers distinct names (`name`)"
    if engines[first].engine == engines[second].engine == "sequence":
        fix = 'give each SequenceWorker a name of its own (SequenceWorker(..., name="nightly"))'
    return (
        f"{kinds} {second} are both known as {unit!r} to the fleet of group {group!r}, which "
        f"could not tell them apart: {fix}"
    )


def _logging_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Log lines as text or as one JSON object each.",
    )(function)
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default="info",
        show_default=True,
    )(function)


@click.group(epilog=TARGET_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks for bad targets.")
@click.version_option(package_name="workit-jobs")
@click.pass_context
def cli(context: click.Context, debug: bool) -> None:
    """Run workit workers: reconciliation loops and DAG pipelines."""
    context.ensure_object(dict)
    context.obj["debug"] = debug


@cli.command(epilog=TARGET_HELP)
@click.argument("target")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP address.")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-http", is_flag=True, help="Serve no HTTP endpoints.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds running executions get to finish on shutdown [default: each worker's, 30].",
)
@click.option(
    "--gc-freeze/--no-gc-freeze",
    default=True,
    show_default=True,
    help="Once the worker is ready, move every object alive then out of the garbage "
    "collector's way (gc.freeze()).",
)
@click.option(
    "--leases",
    metavar="URL",
    default=None,
    help=f"Run as one replica of a fleet: engines built without leases get the lease "
    f"backend at URL ({_URL_HELP}). Needs --group.",
)
@click.option(
    "--group",
    metavar="NAME",
    default=None,
    help="The lease group: replicas with the same URL and group share the handlers.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Seconds a replica stays a member without renewing [default: 15].",
)
@click.option(
    "--lease-schema",
    metavar="NAME",
    default=None,
    help="The PostgreSQL schema of the lease tables [default: public].",
)
@_logging_options
@click.pass_context
def run(
    context: click.Context,
    target: str,
    host: str,
    port: int,
    no_http: bool,
    grace: float | None,
    gc_freeze: bool,
    leases: str | None,
    group: str | None,
    lease_ttl: float | None,
    lease_schema: str | None,
    log_level: str,
    log_format: LogFormat,
) -> None:
    """Run TARGET until SIGINT, SIGTERM or SIGHUP, serving /metrics, /healthz, /readyz, /status.

    A TARGET with a SequenceWorker without a cooler is refused (exit 2): the
    daemon would never run a pass of it; `workit once` runs one.

    The first signal stops gracefully: /readyz turns 503, no new execution
    starts, running ones get the grace period; a second signal cancels them.

    Once the worker is ready, the objects alive then (modules, handlers, the
    engines' per-handler state) are frozen out of garbage collection: with
    thousands of handlers a full collection would otherwise visit them all,
    pausing every execution due meanwhile. Objects frozen are still freed
    when their last reference goes; only reference cycles among them are
    never collected.

    With --leases URL --group NAME, every engine of TARGET built without
    leases runs under that backend: the processes running TARGET with the
    same URL and group share its handlers, each running on one of them at a
    time. Engines that have leases of their own keep them.
    """
    configure(log_level, log_format)
    _check_lease_options(leases, group, lease_ttl, lease_schema)
    backend = None
    if leases is not None and group is not None:
        ttl = 15.0 if lease_ttl is None else lease_ttl
        backend = _lease_backend(leases, group=group, ttl=ttl, schema=lease_schema)
    worker = _load(context, target)
    passless = _passless(worker.describe())
    if passless:
        raise BadTarget(f"{target}: {_no_pass(target, passless)}")
    if backend is not None:
        _lease(target, worker, backend)
    if grace is not None:
        for engine in worker.engines:
            engine.grace = seconds(grace, "--grace")
    try:
        anyio.run(_serve, worker, None if no_http else (host, port), gc_freeze)
    except ServerError as error:
        raise Failure(f"{error} (see the log above)") from None
    report = worker.last_stop
    log.info(
        "workit exiting: %d %s cancelled and %d abandoned",
        report.cancelled,
        "execution" if report.cancelled == 1 else "executions",
        report.abandoned,
        extra={"cancelled": report.cancelled, "abandoned": report.abandoned},
    )
    _exit_past_abandoned_threads()


async def _serve(worker: Worker, address: tuple[str, int] | None, freeze: bool) -> None:
    failed: ServerError | None = None  # raised past the task group, not in a group
    async with anyio.create_task_group() as tasks:
        if freeze:
            tasks.start_soon(_freeze_when_ready, worker)
        try:
            await worker.run_until_signalled(
                serving=None if address is None else serve(worker, *address)
            )
        except ServerError as error:
            failed = error
        tasks.cancel_scope.cancel()
    if failed is not None:
        raise failed


async def _freeze_when_ready(worker: Worker) -> None:
    """``gc.freeze()`` what is alive once ``worker`` is ready (after a collection:
    garbage frozen would never be freed)."""
    await worker.wait_ready()
    gc.collect()
    gc.freeze()
    log.info(
        "objects alive at start frozen out of garbage collection",
        extra={"frozen": gc.get_freeze_count()},
    )


def _exit_past_abandoned_threads() -> None:
    """Exit now if threads of abandoned executions are left: the interpreter
    would wait for them at exit, and they may never return.

    Only those: any other thread (a thread pool's idle workers, say) is
    waited for and the atexit handlers run, as at any other exit. A thread
    that returns within half a second is not left behind.
    """
    deadline = time.monotonic() + 0.5
    for thread in _threads.still_running():
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = _threads.still_running()
    if hung:
        log.warning(
            "exiting past %d %s of abandoned executions",
            len(hung),
            "thread" if len(hung) == 1 else "threads",
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@cli.command(epilog=TARGET_HELP)
@click.argument("target")
@_logging_options
@click.pass_context
def once(context: click.Context, target: str, log_level: str, log_format: LogFormat) -> None:
    """Run one pass of TARGET and print each handler's outcome.

    A sequence worker runs one pass; a parallel worker runs each handler once.
    Exits 0 when every handler succeeded (ignored exceptions count as
    success), 1 otherwise.
    """
    configure(log_level, log_format)
    worker = _load(context, target)
    anyio.run(_once, worker)
    rows = [_outcome(handler) for handler in worker.status().handlers]
    _print_table(["handler", "engine", "outcome", "seconds"], rows)
    failed = any(handler.last_outcome == "failure" for handler in worker.status().handlers)
    context.exit(1 if failed else 0)


async def _once(worker: Worker) -> None:
    # A failure is reported already, and shown in the table.
    with contextlib.suppress(HandlerError):
        await worker.ensure()


def _outcome(handler: HandlerStatus) -> list[str]:
    if handler.executions == 0:
        outcome = "skipped (inactive)" if handler.active is False else "not run"
    elif handler.last_outcome == "failure" and handler.last_error is not None:
        outcome = f"failed: {handler.last_error.type}: {handler.last_error.message}"
    else:
        outcome = "ok" if handler.last_outcome == "success" else "ok (ignored error)"
    duration = "" if handler.last_duration is None else f"{handler.last_duration:.3f}"
    return [handler.name, handler.engine, outcome.splitlines()[0] if outcome else outcome, duration]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@cli.command(epilog=TARGET_HELP)
@click.argument("target")
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
@click.pass_context
def graph(context: click.Context, target: str, output: str) -> None:
    """Print the dependency graph of TARGET's sequence workers."""
    graphs = [engine.dependencies for engine in _load(context, target).describe()]
    sequences = [dependencies for dependencies in graphs if dependencies is not None]
    if not sequences:
        raise BadTarget(f"{target} has no SequenceWorker: there is no graph to draw")
    draw = {"text": _text, "mermaid": _mermaid, "dot": _dot}[output]
    for index, dependencies in enumerate(sequences):
        if index:
            click.echo()
        click.echo(draw(dependencies))


def _text(dependencies: dict[str, list[str]]) -> str:
    return "\n".join(
        f"{name} <- {', '.join(deps)}" if deps else name for name, deps in dependencies.items()
    )


# What may not appear as itself in a quoted Mermaid label, as Mermaid's entity
# codes: `#quot;` and the like, `#35;` for `#` itself. Newlines become <br>.
_MERMAID_ESCAPES = {
    "#": "#35;",
    '"': "#quot;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
}
_MERMAID_SPECIAL = re.compile("|".join(map(re.escape, _MERMAID_ESCAPES)))


def _mermaid_label(name: str) -> str:
    escaped = _MERMAID_SPECIAL.sub(lambda found: _MERMAID_ESCAPES[found[0]], name)
    return re.sub(r"\r\n|\r|\n", "<br>", escaped)


def _mermaid(dependencies: dict[str, list[str]]) -> str:
    ids = {name: f"n{index}" for index, name in enumerate(dependencies)}
    lines = ["flowchart TD"]
    lines += [f'    {ids[name]}["{_mermaid_label(name)}"]' for name in dependencies]
    lines += [
        f"    {ids[dep]} --> {ids[name]}" for name, deps in dependencies.items() for dep in deps
    ]
    return "\n".join(lines)


def _dot(dependencies: dict[str, list[str]]) -> str:
    def quote(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph workit {", "    rankdir=LR;"]
    lines += [f"    {quote(name)};" for name in dependencies]
    lines += [
        f"    {quote(dep)} -> {quote(name)};" for name, deps in dependencies.items() for dep in deps
    ]
    return "\n".join([*lines, "}"])


@cli.command(epilog=TARGET_HELP)
@click.argument("target")
@click.pass_context
def check(context: click.Context, target: str) -> None:
    """Import and construct TARGET, and list its handlers.

    Warns of a SequenceWorker without a cooler: `workit run` would run no
    pass of it (and refuses to start).
    """
    engines = _load(context, target).describe()
    rows = []
    for engine in engines:
        for handler in engine.handlers:
            if engine.kind == "sequence":
                cooler = "-" if engine.cooler is None else f"{engine.cooler:g} (pass)"
            else:
                cooler = _seconds(handler.cooler, handler.cooler_error)
            timeout = _seconds(handler.timeout, handler.timeout_error)
            rows.append([engine.kind, handler.name, cooler, timeout])
    _print_table(["engine", "handler", "cooler", "timeout"], rows)
    click.echo(f"{target}: {_count(len(rows), 'handler')} in {_count(len(engines), 'engine')}")
    passless = _passless(engines)
    if passless:
        click.echo(f"warning: {_no_pass(target, passless)}")


def _seconds(value: float | None, error: str | None = None) -> str:
    if error is not None:
        return f"error: {error}"
    return "-" if value is None else f"{value:g}"


@cli.command()
@click.argument("url")
@click.option("--group", metavar="NAME", required=True, help="The lease group to look at.")
@click.option(
    "--schema",
    metavar="NAME",
    default=None,
    help="The PostgreSQL schema of the lease tables [default: public].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the backend.",
)
def fleet(url: str, group: str, schema: str | None, as_json: bool, timeout: float) -> None:
    """Print the live members of a lease group at URL and who owns which handler.

    URL is the one the replicas run with (workit run --leases URL). Reads
    without joining: the fleet is not disturbed. Exits 1 when the backend
    cannot be read.
    """
    backend = _lease_backend(url, group=group, schema=schema, hint="URL")
    try:
        roster = anyio.run(_roster, backend, timeout)
    except Exception as error:
        if isinstance(error, TimeoutError) and not str(error):
            reason = f"no answer within {timeout:g} s"
        else:
            reason = " ".join(describe(error).split())  # one line: drivers' may have more
        raise Failure(
            f"cannot read the lease group {group!r} at {backend.backend}: {reason}"
        ) from None
    if as_json:
        click.echo(json.dumps(roster.to_dict(), indent=2))
    else:
        _print_roster(roster)


async def _roster(backend: Redis | Postgres, within: float) -> Roster:
    with anyio.fail_after(within):
        return await backend.roster()


def _print_roster(roster: Roster) -> None:
    members, units = roster.members, roster.units
    owned = sum(unit.owner is not None for unit in units)
    click.echo(
        f"group {roster.group!r} at {roster.backend}: {_count(len(members), 'member')}, "
        f"{owned} of {_count(len(units), 'handler')} owned"
    )
    if not members:
        return
    click.echo()
    rows = [
        [m.identity, str(len(m.declares)), str(len(m.owns)), f"{m.expires_in:.1f} s"]
        for m in members
    ]
    _print_table(["member", "handlers", "owns", "lease left"], rows)
    click.echo()
    rows = [
        [
            unit.unit,
            "-" if unit.owner is None else unit.owner,
            "-" if unit.token is None else str(unit.token),
            "yes" if unit.running else "no",
            _due(unit.due_in),
        ]
        for unit in units
    ]
    _print_table(["handler", "owner", "token", "running", "due"], rows)


def _due(due_in: float | None) -> str:
    if due_in is None:
        return "-"
    return "now" if due_in <= 0 else f"in {due_in:.1f} s"


def main() -> None:
    """The ``workit`` console script."""
    cli(prog_name="workit")
