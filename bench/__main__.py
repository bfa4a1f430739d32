"""The command line: ``python -m bench SCENARIO|all [options]`` and ``python -m bench report FILE``.

Measurements print one JSON line each on standard output (the first line
describes the machine); ``--output FILE`` writes the same lines to a file
and ``--report`` turns them into bench/README.md's results and
bench/results.png. ``report FILE`` does the latter from a saved file.
``python -m bench soak --minutes N`` runs the soak (see ``bench/soak.py``);
``report FILE`` on a soak's lines writes bench/README.md's soak section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench._plan import SCENARIOS, groundwork, plan, plan_all
from bench._runner import run
from bench._systems import SYSTEMS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from bench._scenarios import Record

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
PLOT = HERE / "results.png"


def _systems(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown systems {', '.join(unknown) or '(none)'}; choose from {', '.join(SYSTEMS)}"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of workit against the bare asyncio loop and APScheduler 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "all": "every scenario",
        "groundwork": "scale at 10,000 handlers without and with jitter, and without and "
        "with /status polled (also in all)",
        "before-after": "overhead at 100 handlers, scale at 10,000, shutdown of 10,000, "
        "workit from --before TREE and from this checkout, beside bare asyncio",
    }
    for name in (*SCENARIOS, "all", "groundwork", "before-after"):
        sub = commands.add_parser(name, help=helps.get(name, f"the {name} scenario"))
        sub.add_argument("--smoke", action="store_true", help="tiny sizes and ~1 s windows")
        sub.add_argument(
            "--systems",
            type=_systems,
            default=list(SYSTEMS),
            help=f"comma-separated subset of {','.join(SYSTEMS)}",
        )
        sub.add_argument("-o", "--output", type=Path, help="also write the JSON lines here")
        sub.add_argument(
            "--report",
            action="store_true",
            help=f"write the results table into {README.name} and the plot to {PLOT.name}",
        )
        sub.add_argument("--profile", type=Path, metavar="DIR", help="pyinstrument reports here")
        sub.add_argument(
            "--rounds",
            type=int,
            help="make each measurement this many times, systems taking turns; the report "
            "shows medians (default: 5 for all, 3 for groundwork, 1 for one scenario or --smoke)",
        )
        sub.add_argument(
            "--before",
            type=Path,
            metavar="TREE",
            help="also measure workit from TREE's src/workit (another checkout), same bench "
            "code, taking turns with this checkout's; the report compares the two",
        )
        if name in SCENARIOS:
            sub.add_argument("--handlers", type=int, help="number of handlers (dag: nodes)")
            sub.add_argument("--cooler", type=float, help="cooler in seconds (scale)")
            sub.add_argument("--window", type=float, help="measured window in seconds")
            sub.add_argument(
                "--gc-freeze",
                action="store_true",
                help="scale: gc.freeze() once the system has started",
            )
            sub.add_argument(
                "--jitter",
                type=float,
                default=0.0,
                metavar="F",
                help="scale: workit's handlers vary each cooler by up to F either way "
                "(the other systems are skipped)",
            )
            sub.add_argument(
                "--poll-status",
                type=float,
                default=0.0,
                metavar="S",
                help="scale: serve workit's /status and GET it every S seconds in the window, "
                "with the loop-lag probe (the other systems are skipped)",
            )
            sub.add_argument(
                "--loop-lag",
                action="store_true",
                help="scale: a task sleeping 1 ms in a loop measures the event loop's lag",
            )
    soak = commands.add_parser(
        "soak", help="2,000 misbehaving handlers for N minutes (not part of all)"
    )
    soak.add_argument(
        "--minutes", type=float, default=10.0, help="how long (default 10; 0.5 to check it works)"
    )
    soak.add_argument("-o", "--output", type=Path, help="also write the JSON lines here")
    soak.add_argument(
        "--report", action="store_true", help=f"write the soak table into {README.name}"
    )
    fleet = commands.add_parser(
        "fleet",
        help="replica processes under leases on Redis and PostgreSQL: round trips and CPU per "
        "execution in steady state (not part of all)",
    )
    fleet.add_argument("--smoke", action="store_true", help="2 replicas, 6 s windows")
    fleet.add_argument(
        "--faults",
        type=int,
        metavar="N",
        help="instead of the steady state: per backend and size (10 x 1,000 and 3 x 10,000), "
        "a storm of N faults of every kind, then spaced kills, SIGTERMs and joins; "
        "overlaps, cadence, tokens, failover, handoff and spread checked offline",
    )
    fleet.add_argument(
        "--backends",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=["redis", "postgres"],
        help="comma-separated subset of redis,postgres (Redis: a private redis-server; "
        "PostgreSQL: a database of the bench's own on --postgres)",
    )
    fleet.add_argument(
        "--postgres",
        default=os.environ.get("WORKIT_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server to make the bench's database on (default: WORKIT_POSTGRES_DSN "
        "or postgresql://postgres@127.0.0.1:5432/test)",
    )
    fleet.add_argument("-o", "--output", type=Path, help="also write the JSON lines here")
    fleet.add_argument(
        "--report", action="store_true", help=f"write the fleet table into {README.name}"
    )
    report = commands.add_parser("report", help="results table and plot from a JSON lines file")
    report.add_argument("results", type=Path, help="JSON lines written by a run")
    report.add_argument("--readme", type=Path, default=README, help="markdown file to update")
    report.add_argument("--plot", type=Path, default=PLOT, help="PNG file to write")
    return parser


def _write_report(
    records: Sequence[Record], readme: Path, plot: Path, *, to_stderr: bool = False
) -> None:
    from bench._report import write

    print(write(records, readme=readme, image=plot), file=sys.stderr if to_stderr else sys.stdout)


@contextlib.contextmanager
def _emitter(path: Path | None) -> Iterator[Callable[[Record], None]]:
    """A function printing each record as a JSON line, also into ``path`` when given."""
    output = path.open("w", encoding="utf-8") if path else None

    def emit(record: Record) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if output is not None:
            print(line, file=output, flush=True)

    try:
        yield emit
    finally:
        if output is not None:
            output.close()


def _soak(minutes: float, output_path: Path | None, *, report: bool) -> int:
    """Run the soak; the exit status is 1 unless every "done when" condition holds."""
    from bench import soak

    with _emitter(output_path) as emit:
        records = soak.run(minutes, emit=emit)
    if report:
        print(soak.write(records, readme=README), file=sys.stderr)  # stdout has the JSON lines
    return 0 if records[-1].get("status") == "ok" else 1


FLEET_BEGIN = "<!-- fleet-steady:begin (written by python -m bench fleet --report) -->"
FLEET_END = "<!-- fleet-steady:end -->"
FAULTS_BEGIN = "<!-- fleet-faults:begin (written by python -m bench fleet --faults N --report) -->"
FAULTS_END = "<!-- fleet-faults:end -->"


def _fleet(args: argparse.Namespace) -> int:
    from bench import _fleet_plot, _fleet_steady
    from bench._report import put_section

    unknown = sorted(set(args.backends) - {"redis", "postgres"})
    if unknown:
        raise SystemExit(f"unknown backends {', '.join(unknown)}; choose from redis,postgres")
    if args.faults is not None:
        return _fleet_faults(args)
    with _emitter(args.output) as emit:
        records = _fleet_steady.run(args.backends, args.postgres, smoke=args.smoke, emit=emit)
    if args.report:
        put_section(
            README,
            _fleet_steady.markdown(records),
            begin=FLEET_BEGIN,
            end=FLEET_END,
            heading="Replicas under leases",
        )
        print(f"plot: {_fleet_plot.write(README.parent, steady=records)}", file=sys.stderr)
    return 0


def _fleet_faults(args: argparse.Namespace) -> int:
    """The fault runs; the exit status is 1 when a guarantee was broken."""
    from bench import _fleet_faults, _fleet_plot
    from bench._report import put_section

    with _emitter(args.output) as emit:
        records = _fleet_faults.run_all(
            args.backends, faults=args.faults, smoke=args.smoke, emit=emit
        )
    if args.report:
        put_section(
            README,
            _fleet_faults.markdown(records),
            begin=FAULTS_BEGIN,
            end=FAULTS_END,
            heading="Replicas through faults",
        )
        print(f"plot: {_fleet_plot.write(README.parent, faults=records)}", file=sys.stderr)
    return 1 if any(record["violation_count"] for record in records) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status is 1 when a measurement failed."""
    args = _parser().parse_args(argv)
    if args.command == "report":
        from bench import soak
        from bench._report import load

        records = load(args.results)
        if soak.is_soak(records):  # a soak's lines: its table, in the soak section
            print(soak.write(records, readme=args.readme))
            return 0
        _write_report(records, args.readme, args.plot)
        return 0
    if args.command == "soak":
        return _soak(args.minutes, args.output, report=args.report)
    if args.command == "fleet":
        return _fleet(args)
    if args.command == "all":
        runs = plan_all(smoke=args.smoke)
    elif args.command == "groundwork":
        runs = [*plan("scale", smoke=args.smoke), *groundwork(smoke=args.smoke)]
    elif args.command == "before-after":
        if args.before is None:
            raise SystemExit("before-after needs --before TREE (a checkout of the earlier code)")
        runs = [
            *plan("overhead", smoke=args.smoke, handlers=100),
            *plan("scale", smoke=args.smoke),
            *plan("shutdown", smoke=args.smoke),
        ]
    else:
        runs = plan(
            args.command,
            smoke=args.smoke,
            handlers=args.handlers,
            cooler=args.cooler,
            window=args.window,
            gc_freeze=args.gc_freeze,
            jitter=args.jitter,
            poll_status=args.poll_status,
            loop_lag=args.loop_lag,
        )
    rounds = args.rounds
    if rounds is None:
        defaults = {"all": 5, "groundwork": 3, "before-after": 3}
        rounds = 1 if args.smoke else defaults.get(args.command, 1)
    if rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {rounds}")
    with _emitter(args.output) as emit:
        records = run(
            runs,
            smoke=args.smoke,
            systems=args.systems,
            rounds=rounds,
            emit=emit,
            profile=args.profile,
            before=args.before,
            plan=args.command,
        )
    if args.report:
        _write_report(records, README, PLOT, to_stderr=True)  # stdout has the JSON lines
    return 1 if any(record["status"] == "error" for record in records) else 0


if __name__ == "__main__":
    sys.exit(main())
