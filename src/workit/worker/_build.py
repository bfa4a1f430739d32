"""Checks an engine makes of what it is built with, and errors that name the bad item."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NoReturn

from workit.backoff import Backoff
from workit.errors import HandlerError, HandlerTimeout, message_of
from workit.handler import Instrumented, Proxy, current
from workit.status import HandlerInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "check_backoff",
    "check_unique_names",
    "describe",
    "listed",
    "own_handler_calling",
    "proxies",
    "raise_failure",
]


def listed(handlers: object, where: str) -> list[object]:
    """``handlers`` as a list, or ``TypeError`` when it is not a collection."""
    if (
        handlers is None
        or isinstance(handlers, (str, bytes, Mapping))
        or not isinstance(handlers, Iterable)
    ):
        raise TypeError(f"{where} must be a list of handlers, got {handlers!r}")
    return list(handlers)


def proxies(handlers: Iterable[object], where: str) -> list[Proxy]:
    """Each handler in a ``Proxy``; errors name ``where`` and the index.

    A handler wrapped by ``Registry.wrap()`` already gives its ``Proxy``:
    the engine wraps it again itself, and each execution is counted once.
    """
    result = []
    for index, handler in enumerate(handlers):
        if isinstance(handler, Instrumented):
            handler = handler.proxy
        try:
            result.append(handler if isinstance(handler, Proxy) else Proxy(handler))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where} {index}: {error}") from None
    return result


def check_backoff(backoff: object, where: str) -> Backoff | None:
    """``backoff`` when it is a ``Backoff`` or ``None``, else ``TypeError``."""
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"{where} backoff must be a workit.Backoff, got {backoff!r}")
    return backoff


def check_unique_names(proxies: Sequence[Proxy], where: str) -> None:
    """``ValueError`` when two handlers share a name."""
    seen: dict[str, Proxy] = {}
    for proxy in proxies:
        other = seen.setdefault(proxy.name, proxy)
        if other is not proxy:
            raise ValueError(
                f"{where}: two handlers are named {proxy.name!r} "
                f"({other.unwrap()!r} and {proxy.unwrap()!r}); "
                "give each a distinct `name` attribute"
            )


def raise_failure(handler: Instrumented, error: BaseException) -> NoReturn:
    """Raise the ``HandlerError`` (or the ``HandlerTimeout``) of a failed execution."""
    if isinstance(error, HandlerTimeout) and error.handler == handler.name:
        raise error
    raise HandlerError(handler.name) from error


def describe(handler: Instrumented, *, cooler: bool) -> HandlerInfo:
    """What ``handler`` declares: its timeout, and its ``cooler`` when asked."""
    proxy = handler.proxy
    seconds, cooler_error = _read(proxy.cooler) if cooler else (None, None)
    timeout, timeout_error = _read(proxy.timeout)
    return HandlerInfo(
        name=handler.name,
        cooler=seconds,
        timeout=timeout,
        cooler_error=cooler_error,
        timeout_error=timeout_error,
    )


def _read(method: Callable[[], float | None]) -> tuple[float | None, str | None]:
    try:
        return method(), None
    except Exception as error:
        return None, message_of(error)


def own_handler_calling(handlers: Sequence[Instrumented]) -> str | None:
    """The name of the one of ``handlers`` whose execution is calling, if one is.

    An engine's ``ensure()`` called from its own handler would wait for that
    very execution to end: it raises instead.
    """
    execution = current()
    if execution is None:
        return None
    for handler in handlers:
        if execution.is_of(handler):
            return handler.name
    return None
