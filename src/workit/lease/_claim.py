"""The claim an execution runs under, and the error of losing it."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Claim", "LeaseLost", "current", "using"]


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """This replica's ownership of one handler, as the fleet granted it.

    ``handler`` is the handler's name, ``owner`` this replica's identity and
    ``token`` the fencing token: an int that strictly increases each time the
    handler changes owner, fleet-wide, and is never reused. ``valid()`` is true
    while this replica still holds the handler and trusts its lease (false once
    it is fenced, has released the handler or found it taken). A handler that
    writes to a store can pass ``token`` along so that the store refuses a
    stale owner.
    """

    handler: str
    owner: str
    token: int
    _check: Callable[[], bool] = field(default=_never, repr=False, compare=False)

    def valid(self) -> bool:
        """Whether this replica still holds the handler and may act on it."""
        return self._check()


class LeaseLost(Exception):
    """An execution was cancelled because its replica lost the handler's lease.

    ``handler`` is the handler's name. Raised (as the failure of that
    execution) when the replica was fenced or found the handler taken.
    """

    def __init__(self, handler: str, reason: str = "the lease could not be renewed") -> None:
        super().__init__(handler, reason)
        self.handler = handler
        self.reason = reason

    def __str__(self) -> str:
        return f"lease of handler {self.handler!r} lost: {self.reason}"


_current: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "workit_lease_claim", default=None
)


def current() -> Claim | None:
    """The claim of the execution running in this context, or ``None``.

    ``None`` outside an execution and for workers without leases.
    """
    return _current.get()


@contextlib.contextmanager
def using(claim: Claim | None) -> Iterator[None]:
    """Make ``claim`` what ``current()`` returns inside the block (for the engines)."""
    reset = _current.set(claim)
    try:
        yield
    finally:
        _current.reset(reset)
