"""The constructors of ``workit.lease`` (its ``__all__`` is checked in tests/test_public.py)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import workit.lease

COMMON = {"group", "ttl", "renew", "identity", "clock"}


@pytest.mark.parametrize(
    ("name", "positional", "keywords"),
    [
        ("Memory", [], COMMON),
        ("Redis", ["url"], COMMON),
        ("Postgres", ["dsn"], COMMON | {"schema"}),
    ],
)
def test_backend_signatures(name: str, positional: list[str], keywords: set[str]) -> None:
    """Each backend takes its URL positionally and the common settings by keyword only."""
    parameters = inspect.signature(getattr(workit.lease, name)).parameters.values()
    assert [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD] == positional
    assert {p.name for p in parameters if p.kind is p.KEYWORD_ONLY} == keywords
    defaults = {p.name: p.default for p in parameters}
    assert (defaults["ttl"], defaults["renew"], defaults["identity"]) == (15, None, None)


def test_every_backend_is_a_leases() -> None:
    """Memory, Redis and Postgres satisfy the ``Leases`` protocol the engines use."""
    backends = [
        workit.lease.Memory(group="g"),
        workit.lease.Redis("redis://localhost", group="g"),
        workit.lease.Postgres("postgresql://localhost/db", group="g"),
    ]
    assert all(isinstance(backend, workit.lease.Leases) for backend in backends)


def test_claim_and_status_are_frozen_slotted_keyword_only_values() -> None:
    """The values handed out are frozen, slotted, keyword-only dataclasses."""
    for value in (workit.lease.Claim, workit.lease.FleetStatus):
        assert all(field.kw_only for field in dataclasses.fields(value))
        assert getattr(value, "__dataclass_params__").frozen  # noqa: B009  # untyped attribute
        assert "__slots__" in vars(value)


def test_the_membership_has_the_engine_facing_calls() -> None:
    """The calls the engines are written against exist with their documented shapes."""
    membership = workit.lease.Membership
    for name in ("claim", "due", "started", "finished", "should_release", "release"):
        assert callable(getattr(membership, name)), name
    for name in ("on_lost", "on_event", "owner_of", "snapshot"):
        assert callable(getattr(membership, name)), name
    for name in ("run", "acquire", "close"):
        assert inspect.iscoroutinefunction(getattr(membership, name)), name
    for name in ("connected", "ready", "units", "identity", "member"):
        assert isinstance(inspect.getattr_static(membership, name), property), name
    assert "cooler" in inspect.signature(membership.finished).parameters
