"""The claim value, ``current()`` and ``LeaseLost``."""

from __future__ import annotations

import dataclasses

import pytest

from workit.lease import Claim, LeaseLost, current


def test_current_is_none_outside_an_execution() -> None:
    """Without an execution under leases there is no claim."""
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
