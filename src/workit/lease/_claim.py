"""The claim an execution runs under, and the error of losing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workit.errors import LeaseLost
from workit.handler import current as handler_current

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Claim", "LeaseLost", "current"]


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


def current() -> Claim | None:
    """The claim of the execution running in this context, or ``None``.

    ``None`` outside an execution and for workers without leases.
    """
    execution = handler_current()
    if execution is None or not isinstance(execution.claim, Claim):
        return None
    return execution.claim
