"""Which measurements a command runs, at full size or as a smoke test."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "SCENARIOS",
    "Run",
    "baseline",
    "groundwork",
    "plan",
    "plan_all",
    "workit_only",
]

SCENARIOS = ("overhead", "scale", "blocking", "dag", "shutdown")
"""Every scenario, in the order ``all`` runs them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One measurement to make with every system: a scenario at one size."""

    scenario: str
    case: str
    params: dict[str, float] = field(default_factory=dict)
    timeout: float = 600.0
    """Seconds after which the child is killed and the measurement reported as an error."""


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _overhead(handlers: int, smoke: bool, window: float | None) -> Run:
    return Run(
        scenario="overhead",
        case=_plural(handlers, "handler"),
        params={
            "handlers": handlers,
            "warmup": 0.2 if smoke else 1.0,
            "window": window or (0.5 if smoke else 5.0),
        },
        timeout=60.0 if smoke else 120.0,
    )


def _scale(
    handlers: int,
    cooler: float,
    smoke: bool,
    window: float | None,
    *,
    gc_freeze: bool = False,
    jitter: float = 0.0,
    poll_status: float = 0.0,
    loop_lag: bool = False,
) -> Run:
    # A window of 15 s at least and 3 coolers, a warm-up of 3 s at least and a
    # cooler plus 2 s, so the first burst of executions is out of the window.
    if smoke:
        warmup, length = 0.3, window or 1.0
    else:
        warmup, length = max(3.0, cooler + 2.0), window or max(15.0, 3 * cooler)
    case = f"{_plural(handlers, 'handler')}, cooler {cooler:g} s"
    params = {
        "handlers": handlers,
        "cooler": cooler,
        "warmup": warmup,
        "window": length,
        "gc_freeze": float(gc_freeze),
        "settle": 0.1 if smoke else 1.0,
    }
    # The options below appear in the case and the parameters only when set,
    # so the cases without them keep their names (and results files stay comparable).
    if gc_freeze:
        case += ", gc.freeze()"
    if jitter:
        case += f", jitter {jitter:g}"
        params["jitter"] = jitter
    if loop_lag or poll_status:
        case += ", loop-lag probe"
        params["loop_lag"] = 1.0
    if poll_status:
        case += f", /status every {poll_status:g} s"
        params["poll_status"] = poll_status
    return Run(
        scenario="scale",
        case=case,
        params=params,
        timeout=60.0 if smoke else 300.0 + warmup + length + 1.0,
    )


def workit_only(run: Run) -> str | None:
    """Why the run applies to workit alone (an option only workit has), or ``None``."""
    if run.params.get("jitter"):
        return "jitter is workit's option: not applicable"
    if run.params.get("poll_status"):
        return "/status is workit's endpoint: not applicable"
    return None


def baseline(case: str) -> str | None:
    """The case a jitter or ``/status`` case is compared with: the same without that option."""
    for marker in (", /status every ", ", jitter "):
        if marker in case:
            head, _, tail = case.partition(marker)
            rest = tail.partition(", ")[2]
            return f"{head}, {rest}" if rest else head
    return None


def _blocking(smoke: bool, window: float | None) -> Run:
    quick, blockers = (4, 10) if smoke else (40, 100)
    return Run(
        scenario="blocking",
        case=f"{quick} quick + {blockers} blocked",
        params={
            "quick": quick,
            "blockers": blockers,
            "cooler": 0.05 if smoke else 0.1,
            "warmup": 0.2 if smoke else 1.0,
            "window": window or (0.5 if smoke else 5.0),
        },
        timeout=60.0 if smoke else 180.0,
    )


def _dag(smoke: bool, nodes: int | None) -> Run:
    count = nodes or (50 if smoke else 1000)
    return Run(
        scenario="dag",
        case=_plural(count, "node"),
        params={"nodes": count, "seed": 1, "passes": 1 if smoke else 5},
        timeout=60.0 if smoke else 180.0,
    )


def _shutdown(handlers: int, smoke: bool) -> Run:
    return Run(
        scenario="shutdown",
        case=f"{_plural(handlers, 'idle handler')}",
        params={"handlers": handlers, "cooler": 3600.0, "warmup": 0.3 if smoke else 2.0},
        timeout=60.0 if smoke else 180.0,
    )


def plan(
    scenario: str,
    *,
    smoke: bool = False,
    handlers: int | None = None,
    cooler: float | None = None,
    window: float | None = None,
    gc_freeze: bool = False,
    jitter: float = 0.0,
    poll_status: float = 0.0,
    loop_lag: bool = False,
) -> list[Run]:
    """The runs of one scenario; ``handlers``, ``cooler`` and ``window`` override the defaults.

    ``handlers`` is the number of handlers (of nodes for ``dag``); ``cooler``,
    ``gc_freeze`` (every system calls ``gc.freeze()`` once started),
    ``jitter`` (workit's, the share by which each cooler varies),
    ``poll_status`` (seconds between GETs of workit's ``/status``, which
    implies ``loop_lag``) and ``loop_lag`` (a task measuring the event
    loop's lag runs beside the handlers) apply to ``scale`` only.
    """
    if scenario == "overhead":
        sizes = [handlers] if handlers else [1, 100]
        return [_overhead(size, smoke, window) for size in sizes]
    if scenario == "scale":
        default = (200, 0.1) if smoke else (10_000, 1.0)
        return [
            _scale(
                handlers or default[0],
                cooler or default[1],
                smoke,
                window,
                gc_freeze=gc_freeze,
                jitter=jitter,
                poll_status=poll_status,
                loop_lag=loop_lag,
            )
        ]
    if scenario == "blocking":
        return [_blocking(smoke, window)]
    if scenario == "dag":
        return [_dag(smoke, handlers)]
    if scenario == "shutdown":
        return [_shutdown(handlers or (200 if smoke else 10_000), smoke)]
    raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")


def plan_all(*, smoke: bool = False) -> list[Run]:
    """Every scenario at its default sizes, plus ``scale`` at 100,000 handlers and 10 s,
    with the garbage collector as it is and with ``gc.freeze()`` once started.

    Beside the default ``scale`` run come the same with jitter 0.1, and the
    same with the loop-lag probe, without and with ``/status`` polled every
    second."""
    runs: list[Run] = []
    for scenario in SCENARIOS:
        runs += plan(scenario, smoke=smoke)
        if scenario == "scale":
            runs += groundwork(smoke=smoke)
            large = (1000, 0.2) if smoke else (100_000, 10.0)
            for freeze in (False, True):
                runs += plan(
                    scenario, smoke=smoke, handlers=large[0], cooler=large[1], gc_freeze=freeze
                )
    return runs


def groundwork(*, smoke: bool = False, poll_every: float | None = None) -> list[Run]:
    """The runs beside the default ``scale`` one: jitter 0.1, and the loop-lag probe
    without and with ``/status`` polled (every second, every 0.2 s in a smoke run)."""
    every = poll_every or (0.2 if smoke else 1.0)
    return [
        *plan("scale", smoke=smoke, jitter=0.1),
        *plan("scale", smoke=smoke, loop_lag=True),
        *plan("scale", smoke=smoke, poll_status=every),
    ]
