"""What an engine needs of a lease backend: the protocols ``workit.lease`` implements.

The engines own these protocols and never import ``workit.lease``: a backend
is whatever has ``membership()``, and the membership it returns is driven
as described on ``Membership``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence

    from anyio.abc import TaskStatus

    from workit.status import FleetStatus

__all__ = ["Claim", "Leases", "Membership"]


class Claim(Protocol):
    """A replica's claim on one handler: its name, owner identity and fencing token."""

    @property
    def handler(self) -> str:
        """The handler's name."""
        ...

    @property
    def owner(self) -> str:
        """The identity of the replica holding the claim."""
        ...

    @property
    def token(self) -> int:
        """The fencing token."""
        ...

    def valid(self) -> bool:
        """Whether the replica still holds the handler and may act on it."""
        ...


class Membership(Protocol):
    """One engine run's membership of a fleet.

    The engine runs ``run()`` beside its pipelines; for each handler (unit)
    it waits in ``acquire()`` before every execution (the unit's run boundary:
    this replica owns it, trusts its lease and the fleet's ledger says it is
    due), or takes ``claim_now()`` when that needs no wait; it reports
    ``started()`` and ``finished()``, and cancels the running execution of a
    unit ``on_lost`` names. ``stopping()`` says a stop began (each unit is
    handed over once idle); ``close()`` hands the rest over and leaves once
    the engine has drained.
    """

    @property
    def ready(self) -> bool:
        """Whether the member has joined and is not fenced."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Join, then renew until closed."""
        ...

    async def acquire(self, unit: str, *, cooler: float | None = None) -> Claim | None:
        """Wait until ``unit`` is this member's, trusted and due (``cooler``: its cooler
        here); ``None`` once a stop began (``stopping()``): the loop ends."""
        ...

    def claim(self, unit: str) -> Claim | None:
        """The claim on ``unit`` when this member holds it and trusts its lease now."""
        ...

    def claim_now(self, unit: str) -> Claim | None:
        """What ``acquire(unit)`` would return at once, or ``None`` where it would wait."""
        ...

    def owner_of(self, unit: str) -> str | None:
        """The identity of the owner of ``unit`` as last seen, or ``None``."""
        ...

    def started(self, unit: str, *, cooler: float | None = None) -> None:
        """An execution of ``unit`` began."""
        ...

    def finished(self, unit: str, *, cooler: float) -> None:
        """An execution of ``unit`` ended now; the next may start ``cooler`` later."""
        ...

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(unit)`` when the claim on an owned unit turns invalid."""
        ...

    def on_event(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(unit, event)`` on ``acquired``, ``released`` and ``lost``."""
        ...

    async def stopping(self) -> None:
        """The engine starts nothing more: hand each idle unit over now, the others once idle."""
        ...

    async def close(self, *, within: float = 5.0) -> None:
        """Release every unit and leave the fleet."""
        ...

    def snapshot(self) -> FleetStatus:
        """The fleet as last seen."""
        ...


@runtime_checkable
class Leases(Protocol):
    """A lease backend: ``workit.lease.Memory``, ``Redis`` or ``Postgres``."""

    @property
    def group(self) -> str:
        """The group the replicas coordinate in."""
        ...

    def membership(
        self, units: Sequence[str], *, engine: str, logger: logging.Logger
    ) -> Membership:
        """A membership declaring ``units`` for one run of ``engine``."""
        ...
