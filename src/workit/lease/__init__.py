"""Leases: the replicas of a service that share a backend and a group act as one worker.

Each handler (a unit) runs on one replica at a time; the handlers are shared
out fairly among the live replicas; a replica that dies or is cut off loses
its handlers to the others within a bounded time, and stops running them
itself before its lease could have expired on the server.

- ``Memory(group=...)``: in-process, for tests and demos;
- ``Redis(url, group=...)``: extra ``workit-jobs[redis]``;
- ``Postgres(dsn, group=..., schema="public")``: extra ``workit-jobs[postgres]``.

``Redis`` and ``Postgres`` are imported on first use, so ``import
workit.lease`` needs neither driver; ``from_url(url, group=...)`` builds the
one a URL names. Inside an execution under leases, ``current()`` returns
its ``Claim``. An engine drives a backend through ``Leases.membership()``
and the ``Membership`` it returns. Each backend's ``roster()`` reads the
group's live members and who owns what (a ``Roster``) without joining.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from workit.lease._claim import Claim, LeaseLost, current
from workit.lease._membership import LeaseEvent, Membership
from workit.lease._roster import Roster, RosterMember, RosterUnit
from workit.lease._url import SCHEMES, from_url
from workit.lease.memory import Memory
from workit.status import FleetStatus

if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence

    from workit.lease._settings import Settings
    from workit.lease.postgres import Postgres
    from workit.lease.redis import Redis

__all__ = [
    "SCHEMES",
    "Claim",
    "FleetStatus",
    "LeaseEvent",
    "LeaseLost",
    "Leases",
    "Membership",
    "Memory",
    "Postgres",
    "Redis",
    "Roster",
    "RosterMember",
    "RosterUnit",
    "current",
    "from_url",
]


@runtime_checkable
class Leases(Protocol):
    """A lease backend, as an engine uses it: ``Memory``, ``Redis`` or ``Postgres``."""

    @property
    def settings(self) -> Settings:
        """The validated group, ttl, renew, identity and clock."""
        ...

    @property
    def group(self) -> str:
        """The group the replicas coordinate in."""
        ...

    def membership(
        self, units: Sequence[str], *, engine: str, logger: logging.Logger
    ) -> Membership:
        """A membership declaring ``units`` (handler names) for one run of ``engine``.

        Raises ``ValueError`` when a live membership of this object already
        declares one of ``units``.
        """
        ...


_LAZY = {"Redis": "workit.lease.redis", "Postgres": "workit.lease.postgres"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
