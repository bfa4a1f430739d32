"""``workit.HandlerError`` and ``workit.HandlerTimeout``."""

from __future__ import annotations

import pickle

import pytest

import workit
from workit.errors import HandlerError, HandlerTimeout
from workit.status import ErrorInfo


class BrokenStr(Exception):
    """An exception whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no string for you")


def _raised_from(error: HandlerError, cause: BaseException) -> HandlerError:
    """``error`` after ``raise error from cause``, caught."""
    try:
        raise error from cause
    except HandlerError as caught:
        return caught


def test_errors_are_exported_at_top_level() -> None:
    """``workit.HandlerError`` and ``workit.HandlerTimeout`` are the ``workit.errors`` classes."""
    assert (workit.HandlerError, workit.HandlerTimeout) == (HandlerError, HandlerTimeout)


def test_handler_error_is_an_exception() -> None:
    """``HandlerError`` is an ``Exception``, so ``except Exception`` catches it."""
    assert issubclass(HandlerError, Exception)


def test_handler_error_has_handler_name() -> None:
    """``HandlerError(name).handler`` is the name."""
    assert HandlerError("artefact").handler == "artefact"


def test_handler_timeout_is_a_handler_error() -> None:
    """``HandlerTimeout`` is caught by ``except HandlerError``."""
    with pytest.raises(HandlerError):
        raise HandlerTimeout("artefact")


def test_handler_timeout_has_handler_name() -> None:
    """``HandlerTimeout(name).handler`` is the name."""
    assert HandlerTimeout("artefact").handler == "artefact"


def test_str_mentions_the_handler() -> None:
    """``str()`` of a ``HandlerError`` without a cause names the handler."""
    assert "artefact" in str(HandlerError("artefact"))


def test_str_mentions_the_cause() -> None:
    """``str()`` of a ``HandlerError`` raised from a cause names the handler and the cause."""
    text = str(_raised_from(HandlerError("artefact"), ValueError("boom")))
    assert "artefact" in text
    assert "boom" in text


def test_str_mentions_the_cause_type() -> None:
    """``str()`` of a ``HandlerError`` raised from a cause names the cause's type."""
    assert "ValueError" in str(_raised_from(HandlerError("artefact"), ValueError("boom")))


def test_str_survives_a_cause_with_broken_str() -> None:
    """A cause whose ``__str__`` raises does not break ``str()`` of the error."""
    text = str(_raised_from(HandlerError("artefact"), BrokenStr()))
    assert "artefact" in text
    assert "BrokenStr" in text


def test_timeout_str_mentions_the_handler() -> None:
    """``str()`` of a ``HandlerTimeout`` names the handler."""
    assert "artefact" in str(HandlerTimeout("artefact"))


def test_cause_is_kept() -> None:
    """``raise HandlerError(name) from exc`` keeps ``exc`` as ``__cause__``."""
    cause = ValueError("boom")
    assert _raised_from(HandlerError("artefact"), cause).__cause__ is cause


@pytest.mark.parametrize(
    "error",
    [HandlerError("artefact"), HandlerTimeout("artefact"), HandlerTimeout("artefact", 1.5)],
    ids=["error", "timeout", "timeout-with-seconds"],
)
def test_pickle_round_trip(error: HandlerError) -> None:
    """Errors survive pickling: same type, handler name and message."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.handler == "artefact"
    assert str(copy) == str(error)


def test_str_survives_a_cause_whose_str_raises_a_base_exception() -> None:
    """A cause whose ``__str__`` raises SystemExit is described, not propagated."""

    class Exits(Exception):
        def __str__(self) -> str:
            raise SystemExit("from __str__")

    error = HandlerError("job")
    error.__cause__ = Exits()
    assert "<unprintable>" in str(error)


def test_status_error_info_survives_a_str_raising_a_base_exception() -> None:
    """``ErrorInfo.of`` describes an exception whose ``__str__`` raises KeyboardInterrupt."""

    class Interrupts(Exception):
        def __str__(self) -> str:
            raise KeyboardInterrupt

    info = ErrorInfo.of(Interrupts())
    assert info.type.endswith("Interrupts")
    assert info.message == "<unprintable>"
