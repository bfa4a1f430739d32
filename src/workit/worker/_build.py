"""Checks an engine makes of what it is built with, and errors that name the bad item."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NoReturn

from workit.backoff import Backoff
from workit.errors import HandlerError, HandlerTimeout
from workit.errors import describe as describe_error
from workit.handler import Instrumented, Proxy
from workit.status import HandlerInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "check_backoff",
    "check_unique_names",
    "describe",
    "listed",
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
    problems: list[str] = []

    def read(part: str, method: Callable[[], float | None]) -> float | None:
        try:
            return method()
        except Exception as error:
            problems.append(f"{part}() failed: {describe_error(error)}")
            return None

    proxy = handler.proxy
    return HandlerInfo(
        name=handler.name,
        cooler=read("cooler", proxy.cooler) if cooler else None,
        timeout=read("timeout", proxy.timeout),
        problem="; ".join(problems) or None,
    )
