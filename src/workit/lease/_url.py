"""``from_url``: the lease backend a URL names, as ``workit run --leases`` builds it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from workit.lease._settings import redact

if TYPE_CHECKING:
    from workit._duration import Duration
    from workit.lease.postgres import Postgres
    from workit.lease.redis import Redis

__all__ = ["SCHEMES", "from_url"]

SCHEMES: dict[str, str] = {
    "redis": "Redis",
    "rediss": "Redis",
    "postgresql": "Postgres",
    "postgres": "Postgres",
}
"""The URL schemes a fleet can be reached by, and the backend of each."""


def from_url(
    url: str,
    *,
    group: str,
    ttl: Duration = 15,
    renew: Duration | None = None,
    identity: str | None = None,
    schema: str | None = None,
) -> Redis | Postgres:
    """The backend ``url`` names: ``Redis`` for ``redis://`` and ``rediss://``, ``Postgres``
    for ``postgresql://`` and ``postgres://``, built with the settings given.

    ``schema`` is PostgreSQL's only (default ``public``). Raises
    ``ValueError`` for another scheme (naming it and the accepted ones), a
    ``schema`` with a Redis URL and every bad setting the backend refuses;
    ``ImportError`` naming the extra to install when the driver is missing.
    """
    if not isinstance(url, str):
        raise ValueError(f"a lease URL must be a string, got {url!r}")
    scheme, found, _ = url.partition("://")
    accepted = ", ".join(f"{name}://" for name in SCHEMES)
    if not found:
        raise ValueError(f"a lease URL must start with {accepted}; got {redact(url)!r}")
    kind = SCHEMES.get(scheme.lower())
    if kind is None:
        raise ValueError(
            f"lease URL scheme {scheme + '://'!r} is not one workit knows: use {accepted}"
        )
    module = importlib.import_module(f"workit.lease.{kind.lower()}")
    if kind == "Redis":
        if schema is not None:
            raise ValueError("schema is for PostgreSQL; a Redis fleet keeps its keys by group")
        redis: Redis = module.Redis(url, group=group, ttl=ttl, renew=renew, identity=identity)
        return redis
    postgres: Postgres = module.Postgres(
        url, group=group, ttl=ttl, renew=renew, identity=identity, schema=schema or "public"
    )
    return postgres
