"""The claim value, ``current()`` and ``LeaseLost``."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from workit.lease import Claim, LeaseLost, current
from workit.lease._claim import using


def test_current_is_none_outside_an_execution() -> None:
    """Without an execution under leases there is no claim."""
    assert current() is None


def test_using_sets_the_claim_for_the_block_only() -> None:
    """Inside ``using(claim)`` ``current()`` is the claim; after it, what it was before."""
    outer = Claim(handler="a", owner="r1", token=1)
    inner = Claim(handler="b", owner="r1", token=2)
    with using(outer):
        with using(inner):
            assert current() is inner
        assert current() is outer
    assert current() is None


def test_using_resets_after_an_exception() -> None:
    """An execution that raises leaves no claim behind."""
    with pytest.raises(RuntimeError), using(Claim(handler="a", owner="r1", token=1)):
        raise RuntimeError("boom")
    assert current() is None


@pytest.mark.anyio
async def test_each_task_sees_its_own_claim() -> None:
    """Concurrent executions each see the claim they run under."""
    seen: dict[str, str | None] = {}

    async def execution(name: str) -> None:
        with using(Claim(handler=name, owner="r1", token=len(name))):
            await anyio.sleep(0.001)
            claim = current()
            seen[name] = claim.handler if claim else None

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(execution, "one")
        tasks.start_soon(execution, "three")
    assert seen == {"one": "one", "three": "three"}
    assert current() is None


def test_a_claim_made_by_hand_is_never_valid() -> None:
    """A claim not granted by a membership is not valid."""
    assert not Claim(handler="a", owner="r1", token=1).valid()


def test_a_claim_is_a_frozen_value() -> None:
    """Claims are immutable and compare by handler, owner and token."""
    claim = Claim(handler="a", owner="r1", token=1, _check=lambda: True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        claim.token = 2  # type: ignore[misc]  # the point: it is frozen
    assert claim == Claim(handler="a", owner="r1", token=1)
    assert claim.valid()


def test_lease_lost_names_the_handler() -> None:
    """LeaseLost is an Exception carrying the handler's name and the reason."""
    error = LeaseLost("sync_users")
    assert isinstance(error, Exception)
    assert error.handler == "sync_users"
    assert str(error) == "lease of handler 'sync_users' lost: the lease could not be renewed"
    assert str(LeaseLost("a", "another member took it")).endswith("another member took it")
