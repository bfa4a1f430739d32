"""The exceptions workit raises about handler executions."""

from __future__ import annotations

__all__ = ["HandlerError", "HandlerTimeout", "LeaseLost"]


class HandlerError(Exception):
    """A handler execution failed.

    Raised by ``SequenceWorker.ensure()`` for the first handler that failed in
    a pass. ``handler`` is that handler's name; ``__cause__`` is the exception
    it raised.
    """

    handler: str
    """The name of the handler whose execution failed."""

    def __init__(self, handler: str) -> None:
        super().__init__(handler)
        self.handler = handler

    def __str__(self) -> str:
        cause = self.__cause__
        if cause is None:
            return f"handler {self.handler!r} failed"
        return f"handler {self.handler!r} failed: {describe(cause)}"


class HandlerTimeout(HandlerError):
    """A handler execution took longer than the handler's ``timeout``.

    An async execution is cancelled at the deadline. A sync one cannot be
    interrupted: it is reported at the deadline, and the handler's next
    execution waits until its thread has returned.
    """

    timeout: float | None
    """The handler's timeout in seconds, when known."""

    def __init__(self, handler: str, timeout: float | None = None) -> None:
        super().__init__(handler)
        self.timeout = timeout

    def __reduce__(self) -> tuple[type[HandlerTimeout], tuple[str, float | None]]:
        return type(self), (self.handler, self.timeout)

    def __str__(self) -> str:
        if self.timeout is None:
            return f"handler {self.handler!r} timed out"
        return f"handler {self.handler!r} timed out after {self.timeout:g} s"


def message_of(error: BaseException) -> str:
    """``str(error)``, or ``"<unprintable>"`` when its ``__str__`` is broken."""
    try:
        return str(error)
    except BaseException:  # a broken __str__, whatever it raises, must not hide the failure
        return "<unprintable>"


def describe(error: BaseException) -> str:
    """``Type: message`` for an exception, even when its ``__str__`` is broken."""
    message = message_of(error)
    kind = type(error).__name__
    return f"{kind}: {message}" if message else kind


class LeaseLost(Exception):
    """An execution was cancelled because its replica lost the handler's lease.

    ``handler`` is the handler's name (a pipeline's under leases). It is the
    failure of that execution when the replica could not renew its lease in
    time (fenced) or found the handler taken by another replica.
    """

    def __init__(self, handler: str, reason: str = "the lease could not be renewed") -> None:
        super().__init__(handler, reason)
        self.handler = handler
        self.reason = reason

    def __str__(self) -> str:
        return f"lease of handler {self.handler!r} lost: {self.reason}"
