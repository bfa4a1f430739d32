"""Status snapshots: what each handler of a worker is doing and has done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeAlias

from workit.errors import message_of

__all__ = ["ErrorInfo", "HandlerStatus", "Outcome", "StopReport", "WorkerStatus"]

Outcome: TypeAlias = Literal["success", "ignored", "failure"]
"""How an execution ended: returned, raised an ignored exception, or failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """The type name and message of the exception a failed execution raised."""

    type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorInfo:
        """Describe ``error``, even when its ``__str__`` is broken."""
        return cls(type=type(error).__qualname__, message=message_of(error))

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
    (``None`` when none is planned).
    """

    name: str
    engine: Literal["parallel", "sequence"]
    active: bool | None
    running: bool
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

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: times as ISO-8601 strings, ``last_error`` as a dict."""
        return {
            "name": self.name,
            "engine": self.engine,
            "active": self.active,
            "running": self.running,
            "executions": self.executions,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_started": _iso(self.last_started),
            "last_finished": _iso(self.last_finished),
            "last_success": _iso(self.last_success),
            "last_duration": self.last_duration,
            "last_outcome": self.last_outcome,
            "last_error": None if self.last_error is None else self.last_error.to_dict(),
            "next_run": _iso(self.next_run),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatus:
    """A worker's readiness and the status of each of its handlers."""

    ready: bool
    handlers: tuple[HandlerStatus, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: ``{"ready": bool, "handlers": [...]}``."""
        return {"ready": self.ready, "handlers": [handler.to_dict() for handler in self.handlers]}


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


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
