"""The settings every backend shares, validated once, and the per-object
record of which units have a live membership."""

from __future__ import annotations

import math
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import anyio

from workit._duration import seconds

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from workit._duration import Duration

__all__ = [
    "Configured",
    "Live",
    "Settings",
    "check_units",
    "check_url",
    "default_identity",
    "redact",
    "settings",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """A fleet's coordinates and timing, as one backend object was given them.

    ``margin`` is how long before its lease could expire on the server a
    member stops trusting it: ``min(1 s, ttl / 10)``, room for the two clocks
    running at slightly different rates and for an execution being started
    at the last moment.
    """

    group: str
    ttl: float
    renew: float
    identity: str
    clock: Callable[[], float] = field(repr=False, compare=False)

    @property
    def margin(self) -> float:
        """Seconds before the server-side expiry at which claims stop being trusted."""
        return margin(self.ttl)

    @property
    def sync_timeout(self) -> float:
        """Seconds a joined member's sync may take: what the last renewal's trust leaves.

        A renewal sent ``renew`` after the last good one keeps the member trusted
        throughout if it succeeds within ``ttl - margin - renew``; at least ``renew``.
        A slow server (a big batch on a busy machine) then still gets through,
        where a shorter bound would cancel every attempt and the member would go
        round fencing and rejoining. Fencing does not wait for it: trust runs out
        on its own clock.
        """
        return max(self.renew, self.ttl - self.margin - self.renew)


def margin(ttl: float) -> float:
    """``min(1 s, ttl / 10)``: a member stops trusting its lease that long before it could
    expire, and a takeover from a member that died counts the cooler from that long after
    (the Redis script and the PostgreSQL function compute it alike)."""
    return min(1.0, ttl / 10)


def default_identity() -> str:
    """``host-pid-suffix``: a new name for every process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def settings(
    *,
    group: object,
    ttl: Duration,
    renew: Duration | None,
    identity: object,
    clock: Callable[[], float] | None,
) -> Settings:
    """Validated ``Settings``, or a ``ValueError`` naming the bad value."""
    if not isinstance(group, str) or not group:
        raise ValueError(f"group must be a non-empty string, got {group!r}")
    ttl_seconds = _positive(ttl, "ttl")
    if renew is None:
        renew_seconds = ttl_seconds / 5
    else:
        renew_seconds = _positive(renew, "renew")
        if renew_seconds >= ttl_seconds:
            raise ValueError(
                f"renew must be below ttl ({ttl_seconds:g} s), got {renew_seconds:g} s"
            )
    if identity is None:
        identity = default_identity()
    elif not isinstance(identity, str) or not identity:
        raise ValueError(f"identity must be a non-empty string, got {identity!r}")
    return Settings(
        group=group,
        ttl=ttl_seconds,
        renew=renew_seconds,
        identity=identity,
        clock=clock or anyio.current_time,
    )


def _positive(value: object, what: str) -> float:
    try:
        result = seconds(value, what)
    except TypeError as error:
        raise ValueError(str(error)) from None
    if result <= 0 or math.isinf(result):
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return result


def check_url(url: object, schemes: tuple[str, ...], what: str) -> str:
    """``url`` when it is a string with one of ``schemes``, else a ``ValueError``."""
    if not isinstance(url, str) or not any(url.startswith(f"{scheme}://") for scheme in schemes):
        allowed = ", ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"{what} URL must start with {allowed}, got {redact(url)!r}")
    return url


def redact(url: object) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter)."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name = user.partition(":")[0]
        netloc = f"{name}@{host}" if name else host
    query = "&".join(
        item for item in parts.query.split("&") if not item.lower().startswith("password=")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Live:
    """The units that have a live membership on one backend object.

    Two engines of one process that share a group must not both lease a
    handler of the same name: the second would fight the first for it.
    """

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}

    def add(self, units: Iterable[str], engine: str) -> None:
        """Note ``units`` as leased by ``engine``, or raise if one already is."""
        units = list(units)
        taken = sorted(unit for unit in units if unit in self._holders)
        if taken:
            holders = sorted({self._holders[unit] for unit in taken})
            raise ValueError(
                f"engine {engine!r} leases handlers {taken} that engine(s) {holders} of this "
                "process already lease in the same group: give the handlers distinct names "
                "(set `name`) or use another group"
            )
        for unit in units:
            self._holders[unit] = engine

    def remove(self, units: Iterable[str]) -> None:
        """Forget ``units`` (their membership ended)."""
        for unit in units:
            self._holders.pop(unit, None)


def check_units(units: Sequence[str]) -> tuple[str, ...]:
    """``units`` as a tuple, or a ``ValueError`` for none, duplicates or non-strings."""
    if isinstance(units, str):
        raise ValueError(f"units must be a sequence of handler names, got the string {units!r}")
    result = tuple(units)
    if not result:
        raise ValueError("a membership needs at least one unit")
    for unit in result:
        if not isinstance(unit, str) or not unit:
            raise ValueError(f"units must be non-empty strings, got {unit!r}")
    if len(set(result)) != len(result):
        duplicates = sorted({unit for unit in result if result.count(unit) > 1})
        raise ValueError(f"units must be distinct, got {duplicates} more than once")
    return result


class Configured:
    """What every lease backend has: its validated settings, and the group among them."""

    _settings: Settings

    @property
    def settings(self) -> Settings:
        """The validated group, ttl, renew, identity and clock."""
        return self._settings

    @property
    def group(self) -> str:
        """The group the replicas coordinate in."""
        return self._settings.group
