"""Status snapshots: what each handler of a worker is doing and has done."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Literal, TypeAlias

from workit.errors import message_of

__all__ = [
    "EngineInfo",
    "ErrorInfo",
    "FleetStatus",
    "HandlerInfo",
    "HandlerStatus",
    "Outcome",
    "StopReport",
    "WorkerStatus",
]

Outcome: TypeAlias = Literal["success", "ignored", "failure"]
"""How an execution ended: returned, raised an ignored exception, or failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """The type name and message of the exception a failed execution raised."""

    type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorInfo:
        """Describe ``error``, even when its ``__str__`` is broken.

        A message that cannot be encoded as UTF-8 (a lone surrogate from a
        file name decoded with ``surrogateescape``, say) keeps the offending
        characters as backslash escapes, so that it can be served as JSON.
        """
        message = message_of(error)
        if not message.isascii():
            message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return cls(type=type(error).__qualname__, message=message)

    def to_dict(self) -> dict[str, str]:
        """``{"type": ..., "message": ...}``."""
        return {"type": self.type, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerStatus:
    """One handler's state at the moment of the snapshot.

    ``active`` is the handler's last answer to ``active()`` (``None`` before
    it was first asked). ``executions`` and ``failures`` count as the metrics
    do: skipped executions are not counted, ignored exceptions are
    successes. Times are UTC; ``next_run`` is when the next execution is due
    (``None`` when none is planned). ``running`` stays true while a sync
    execution that was reported at its timeout still runs in its thread, and
    ``overdue`` says so. ``last_outcome`` is ``"success"``, ``"ignored"``,
    ``"failure"``, or ``None`` before the first execution; ``recent`` holds the
    outcomes of the last executions (up to 20), oldest first. Under leases,
    ``owner`` is the identity of the replica that owns the handler, as this
    replica last saw it (``None`` when nobody does), and ``owned`` whether it
    is this one.
    """

    name: str
    engine: Literal["parallel", "sequence"]
    active: bool | None
    running: bool
    overdue: bool = False
    executions: int
    failures: int
    consecutive_failures: int
    last_started: datetime | None
    last_finished: datetime | None
    last_success: datetime | None
    last_duration: float | None
    last_outcome: Outcome | None
    last_error: ErrorInfo | None
    next_run: datetime | None
    recent: tuple[Outcome, ...] = ()
    owner: str | None = None
    owned: bool = False

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: times as ISO-8601 strings, ``last_error`` as a dict."""
        return {field: _json(getattr(self, field)) for field in _HANDLER_FIELDS}


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetStatus:
    """The replicas a worker under leases coordinates with, as it last saw them.

    ``backend`` is the backend's URL without its password; ``members`` the
    identities of the live replicas, sorted.
    """

    identity: str
    group: str
    backend: str
    connected: bool
    members: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the fields."""
        return {
            "identity": self.identity,
            "group": self.group,
            "backend": self.backend,
            "connected": self.connected,
            "members": list(self.members),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatus:
    """A worker's readiness, the status of each of its handlers, and its fleet.

    ``fleet`` is ``None`` for a worker without leases.
    """

    ready: bool
    handlers: tuple[HandlerStatus, ...]
    fleet: FleetStatus | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: ``{"ready": bool, "handlers": [...], "fleet": ...}``."""
        return {
            "ready": self.ready,
            "handlers": [handler.to_dict() for handler in self.handlers],
            "fleet": None if self.fleet is None else self.fleet.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StopReport:
    """What a graceful stop could not wait for.

    ``cancelled``: async executions still running when the grace period
    ended, cancelled then. ``abandoned``: sync executions still running then;
    their threads go on until the function returns. ``handlers`` names both.
    """

    cancelled: int = 0
    abandoned: int = 0
    handlers: tuple[str, ...] = ()

    def __add__(self, other: StopReport) -> StopReport:
        return StopReport(
            cancelled=self.cancelled + other.cancelled,
            abandoned=self.abandoned + other.abandoned,
            handlers=self.handlers + other.handlers,
        )


_LAST_SECOND = 253402300800  # 10000-01-01T00:00:00Z
_prefixes: dict[int, str] = {}  # the seconds of recent times, formatted


def iso_json(seconds: float | None) -> str:
    """A ``time.time()`` value as the JSON string ``timestamp(seconds).isoformat()`` gives
    (``null`` for none), without making a datetime: the seconds are formatted once."""
    if seconds is None:
        return "null"
    if not 0 <= seconds < _LAST_SECOND:
        moment = timestamp(seconds)
        return "null" if moment is None else f'"{moment.isoformat()}"'
    whole, fraction = divmod(seconds, 1.0)
    micro = round(fraction * 1e6)  # half to even, as datetime rounds
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    second = int(whole)
    prefix = _prefixes.get(second)
    if prefix is None:
        if len(_prefixes) > 4096:
            _prefixes.clear()
        prefix = _prefixes[second] = datetime.fromtimestamp(second, UTC).isoformat()[:19]
    return f'"{prefix}.{micro:06d}+00:00"' if micro else f'"{prefix}+00:00"'


def timestamp(seconds: float | None) -> datetime | None:
    """A ``time.time()`` value as an aware UTC datetime; ``None`` past year 9999.

    A cooler may be infinite ("never again"): its next run has no date.
    """
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _json(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ErrorInfo):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return value


_HANDLER_FIELDS = tuple(field.name for field in fields(HandlerStatus))


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerInfo:
    """What a handler declares, as an engine runs it (``Worker.describe()``).

    ``cooler`` is ``None`` for the handlers of a sequence engine (the pass
    has the cooler); ``timeout`` is ``None`` for no limit. When ``cooler()``
    or ``timeout()`` raised, the value is ``None`` and ``cooler_error`` or
    ``timeout_error`` is the exception's message.
    """

    name: str
    cooler: float | None
    timeout: float | None
    cooler_error: str | None = None
    timeout_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineInfo:
    """One engine of a worker: its kind, handlers and, for a sequence, the graph.

    ``cooler`` is the sequence engine's pause between passes (``None`` for
    the parallel engine, and for a sequence engine that runs on demand only);
    ``dependencies`` maps each handler of a sequence engine to the handlers
    it depends on (``None`` for the parallel engine).
    """

    kind: Literal["parallel", "sequence"]
    handlers: tuple[HandlerInfo, ...]
    cooler: float | None = None
    dependencies: dict[str, list[str]] | None = None
