"""The backend differences: the loops' naps, and which cancellations are the engine's."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from workit._backend import is_cancellation, naps, tasks

LONG = 3600
"""Longer than any test: a nap this long ends only when it is woken."""


class Sleepers:
    """Tasks napping in slots of one ``Naps``, noting which slots have returned."""

    def __init__(self, slots: int) -> None:
        self.naps = naps(slots)
        self.returned: list[int] = []

    async def sleep(self, slot: int) -> None:
        await self.naps.sleep(slot, LONG)
        self.returned.append(slot)


@pytest.mark.anyio
async def test_wake_one_ends_only_that_slots_nap() -> None:
    """``wake_one(slot)`` makes that slot's nap return; the other slots keep waiting."""
    sleepers = Sleepers(3)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for slot in range(3):
                group.start_soon(sleepers.sleep, slot)
            await anyio.wait_all_tasks_blocked()
            sleepers.naps.wake_one(1)
            await anyio.wait_all_tasks_blocked()
            assert sleepers.returned == [1]
            sleepers.naps.wake_one(2)
            await anyio.wait_all_tasks_blocked()
            assert sleepers.returned == [1, 2]
            sleepers.naps.wake()
    assert sorted(sleepers.returned) == [0, 1, 2]


@pytest.mark.anyio
async def test_wake_ends_every_nap() -> None:
    """``wake()`` makes every pending nap return at once, normally (not cancelled)."""
    sleepers = Sleepers(4)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for slot in range(4):
                group.start_soon(sleepers.sleep, slot)
            await anyio.wait_all_tasks_blocked()
            assert sleepers.returned == []
            sleepers.naps.wake()
            await anyio.wait_all_tasks_blocked()
            assert sorted(sleepers.returned) == [0, 1, 2, 3]
            assert not group.cancel_scope.cancel_called


@pytest.mark.anyio
async def test_waking_a_slot_that_does_not_nap_changes_nothing() -> None:
    """``wake_one()`` of an idle slot neither fails nor shortens that slot's next nap."""
    sleepers = Sleepers(2)
    sleepers.naps.wake_one(0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sleepers.sleep, 0)
            await anyio.wait_all_tasks_blocked()
            assert sleepers.returned == []
            sleepers.naps.wake_one(0)
    assert sleepers.returned == [0]


@pytest.mark.anyio
async def test_a_nap_of_zero_returns_at_once() -> None:
    """A nap of 0 s only lets the other tasks run."""
    sleepers = Sleepers(1)
    with anyio.fail_after(5):
        await sleepers.naps.sleep(0, 0)


def test_an_exception_is_never_a_cancellation() -> None:
    """An ``Exception`` is never taken for a cancellation, with or without an event loop."""
    assert not is_cancellation(RuntimeError("boom"))
    assert not is_cancellation(TimeoutError())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_cancelled_error_raised_in_a_spawned_task_is_not_the_engines() -> None:
    """On asyncio, in a ``tasks()`` task, a ``CancelledError`` nobody cancelled it with
    (raised by handler code, or from ``cancel()`` of its own task) is not a cancellation."""
    verdicts: list[bool] = []

    async def raised() -> None:
        verdicts.append(is_cancellation(asyncio.CancelledError()))

    async def self_cancelled() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as error:
            verdicts.append(is_cancellation(error))
            task.uncancel()

    with anyio.fail_after(5):
        async with tasks() as group:
            group.spawn(raised)
            group.spawn(self_cancelled)
    assert verdicts == [False, False]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_blocks_own_cancellation_is_the_engines() -> None:
    """On asyncio, the cancellation a ``tasks()`` block sends its tasks is a cancellation."""
    verdicts: list[bool] = []

    async def hang() -> None:
        try:
            await anyio.sleep_forever()
        except asyncio.CancelledError as error:
            verdicts.append(is_cancellation(error))
            raise

    async def fail() -> None:
        await anyio.wait_all_tasks_blocked()
        raise LookupError("fails the block")

    async def block() -> None:
        async with tasks() as group:
            group.spawn(hang)
            group.spawn(fail)

    with anyio.fail_after(5), pytest.raises(LookupError):
        await block()
    assert verdicts == [True]
