"""``workit.handler.name()`` and ``names()``: how handlers are named."""

from __future__ import annotations

import functools
from unittest.mock import MagicMock

import pytest

import workit
from workit.handler import Proxy, name, names


def _ensure_nothing(self: object) -> None:
    """An ``ensure`` for handler classes built with ``type()``."""


def _instance_of(class_name: str, **attributes: object) -> object:
    """A handler whose class is called ``class_name``, with ``attributes`` set on the class."""
    cls = type(class_name, (), {"ensure": _ensure_nothing, **attributes})
    instance: object = cls()
    return instance


class ArtefactHandler:
    """A handler declaring no name."""

    def ensure(self) -> None:
        """Do nothing."""


class Named:
    """A handler declaring a name."""

    name = "artefact"

    def ensure(self) -> None:
        """Do nothing."""


class Wrapper:
    """A wrapper: a handler with ``unwrap()`` and no name of its own."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def unwrap(self) -> object:
        """The wrapped handler."""
        return self.inner

    def ensure(self) -> None:
        """Do nothing."""


class NamedWrapper(Wrapper):
    """A wrapper with a name of its own."""

    name = "outer"


class SelfWrapper:
    """A wrapper whose ``unwrap()`` returns itself."""

    def unwrap(self) -> object:
        """Itself."""
        return self

    def ensure(self) -> None:
        """Do nothing."""


def sync_job() -> None:
    """A plain function to make a ``workit.Handler`` from."""


def job_with_argument(value: int) -> None:
    """A function needing an argument, for ``functools.partial``."""


def test_name_attribute_wins() -> None:
    """A non-empty string ``name`` attribute is the handler's name."""
    assert name(Named()) == "artefact"


@pytest.mark.parametrize("declared", ["", None, 42, b"artefact"], ids=repr)
def test_unusable_name_attribute_falls_back_to_class_name(declared: object) -> None:
    """An empty or non-string ``name`` attribute is ignored: the class name is used."""
    assert name(_instance_of("ArtefactHandler", name=declared)) == "artefact_handler"


def test_name_attribute_set_on_instance_wins() -> None:
    """A ``name`` set on the instance (not the class) is used too."""
    handler = ArtefactHandler()
    handler.name = "instance_name"  # type: ignore[attr-defined]  # set on the fly, as users may
    assert name(handler) == "instance_name"


def test_wrapper_gives_inner_name() -> None:
    """A wrapper without a name takes the name of what ``unwrap()`` returns."""
    assert name(Wrapper(Named())) == "artefact"


def test_nested_wrappers_give_innermost_name() -> None:
    """Wrappers of wrappers are followed down to the innermost handler."""
    assert name(Wrapper(Wrapper(Wrapper(Named())))) == "artefact"


def test_wrapper_of_unnamed_handler_gives_inner_class_name() -> None:
    """A wrapper is named after the class of the handler it wraps, not its own class."""
    assert name(Wrapper(Wrapper(ArtefactHandler()))) == "artefact_handler"


def test_wrapper_with_own_name_keeps_it() -> None:
    """A wrapper's own non-empty ``name`` wins over the wrapped handler's."""
    assert name(NamedWrapper(Named())) == "outer"


def test_wrapper_under_a_named_wrapper_is_skipped() -> None:
    """Following unwrap() stops at the first non-empty name on the way down."""
    assert name(Wrapper(NamedWrapper(Named()))) == "outer"


def test_wrapper_unwrapping_to_itself_does_not_loop() -> None:
    """A wrapper whose ``unwrap()`` returns itself is named after its class."""
    assert name(SelfWrapper()) == "self_wrapper"


class Partner:
    """A wrapper whose ``unwrap()`` returns its partner, set after both are made."""

    def __init__(self) -> None:
        self.partner: object = None
        self.unwrapped = 0

    def unwrap(self) -> object:
        """The partner, which may unwrap back to this one."""
        self.unwrapped += 1
        return self.partner

    def ensure(self) -> None:
        """Do nothing."""


class OtherPartner(Partner):
    """The other half of a two-object ``unwrap()`` cycle."""


def test_two_wrappers_unwrapping_to_each_other_do_not_loop() -> None:
    """A cycle of two wrappers (a -> b -> a) ends, and is named after the handler itself."""
    first, second = Partner(), OtherPartner()
    first.partner, second.partner = second, first
    assert (name(first), name(second)) == ("partner", "other_partner")
    assert (first.unwrapped, second.unwrapped) == (2, 2)  # stopped at the cycle, not the depth


def test_proxy_has_the_handler_name() -> None:
    """A ``Proxy`` is named like the handler it wraps."""
    assert name(Proxy(ArtefactHandler())) == "artefact_handler"


def test_proxy_of_wrapper_has_the_innermost_name() -> None:
    """A ``Proxy`` of a wrapper is named like the innermost handler."""
    assert name(Proxy(Wrapper(Named()))) == "artefact"


def test_registry_wrap_has_the_handler_name(registry: workit.Registry) -> None:
    """``registry.wrap(h)`` is named like ``h``."""
    assert name(registry.wrap(ArtefactHandler())) == "artefact_handler"


def test_registry_wrap_of_named_handler_keeps_the_name(registry: workit.Registry) -> None:
    """``registry.wrap(h)`` keeps the declared name of ``h``."""
    assert name(registry.wrap(Named())) == "artefact"


def test_function_handler_is_named_after_the_function() -> None:
    """A ``workit.Handler(fn)`` is named ``fn.__name__``."""
    assert name(workit.Handler(sync_job)) == "sync_job"


def test_async_function_handler_is_named_after_the_function() -> None:
    """A ``workit.Handler`` of a coroutine function is named after it too."""

    async def async_job() -> None:
        """Do nothing."""

    assert name(workit.Handler(async_job)) == "async_job"


def test_function_handler_looks_through_partial() -> None:
    """A ``workit.Handler(partial(fn, ...))`` is named ``fn.__name__``."""
    assert name(workit.Handler(functools.partial(job_with_argument, 1))) == "job_with_argument"


def test_function_handler_looks_through_nested_partials() -> None:
    """Partials of partials are followed down to the function."""
    inner = functools.partial(job_with_argument)
    assert name(workit.Handler(functools.partial(inner, 1))) == "job_with_argument"


def test_function_handler_explicit_name_wins() -> None:
    """``workit.Handler(fn, name=...)`` is named ``name``."""
    assert name(workit.Handler(sync_job, name="custom")) == "custom"


def test_proxy_of_function_handler_is_named_after_the_function() -> None:
    """Wrapping a ``workit.Handler`` in a ``Proxy`` keeps the function's name."""
    assert name(Proxy(workit.Handler(sync_job))) == "sync_job"


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("ArtefactHandler", "artefact_handler"),
        ("HTTPSync", "http_sync"),
        ("A", "a"),
        ("ABCHandler2", "abc_handler2"),
        ("Handler", "handler"),
        ("MyHTTPHandler", "my_http_handler"),
        ("S3Sync", "s3_sync"),
        ("IOHandler", "io_handler"),
        ("lowercase", "lowercase"),
        ("Already_Snake", "already_snake"),
    ],
)
def test_class_name_in_snake_case(class_name: str, expected: str) -> None:
    """Without a name, a handler is named after its class in snake_case."""
    assert name(_instance_of(class_name)) == expected


def test_names_keep_order() -> None:
    """``names()`` returns the names in the order of the handlers."""
    handlers = [Named(), ArtefactHandler(), workit.Handler(sync_job), Wrapper(Named())]
    assert names(handlers) == ["artefact", "artefact_handler", "sync_job", "artefact"]


def test_names_accepts_any_iterable() -> None:
    """``names()`` takes any iterable, such as a generator."""
    assert names(handler for handler in (ArtefactHandler(), Named())) == [
        "artefact_handler",
        "artefact",
    ]


def test_names_of_nothing() -> None:
    """``names([])`` is an empty list."""
    assert names([]) == []


class Endless:
    """An object whose ``unwrap()`` makes a new one every time, as a mock does."""

    def unwrap(self) -> Endless:
        """A new object, again and again."""
        return Endless()

    def ensure(self) -> None:
        """Do nothing."""


def _raising(error: Exception) -> property:
    def get(self: object) -> object:
        raise error

    return property(get)


@pytest.mark.parametrize(
    "error", [KeyError("name"), AttributeError("no settings")], ids=["KeyError", "AttributeError"]
)
def test_name_property_that_raises_is_a_type_error_naming_the_class(error: Exception) -> None:
    """A ``name`` property that raises (``AttributeError`` too) is a TypeError naming the class."""
    handler = _instance_of("BrokenName", name=_raising(error))
    with pytest.raises(
        TypeError, match=rf"BrokenName handler: reading its name raised {type(error).__name__}"
    ):
        name(handler)


def test_unwrap_that_raises_is_a_type_error_naming_the_class() -> None:
    """An ``unwrap()`` that raises is a ``TypeError`` naming the wrapper's class."""

    def unwrap(self: object) -> object:
        raise RuntimeError("not wired")

    with pytest.raises(
        TypeError, match=r"BrokenWrapper handler: its unwrap\(\) raised RuntimeError"
    ):
        name(_instance_of("BrokenWrapper", unwrap=unwrap))


def test_mock_is_named_after_its_class() -> None:
    """A ``MagicMock`` (its ``name`` a mock, its ``unwrap()`` chain endless) is ``magic_mock``."""
    assert name(MagicMock(cooler=1)) == "magic_mock"


def test_unwrap_chain_without_end_is_named_after_the_outer_class() -> None:
    """A chain of ``unwrap()`` longer than ``UNWRAP_DEPTH`` is not followed to its (absent) end."""
    assert name(Endless()) == "endless"


def test_name_deep_in_a_long_chain_is_found() -> None:
    """Fifty wrappers deep, the innermost handler's name is still found."""
    handler: object = Named()
    for _ in range(50):
        handler = Wrapper(handler)
    assert name(handler) == "artefact"


class Front:
    """A handler whose ``unwrap()`` starts an endless chain of objects of another class."""

    def unwrap(self) -> Endless:
        """An endless chain, not what this handler wraps."""
        return Endless()

    def ensure(self) -> None:
        """Do nothing."""


def test_endless_chain_of_another_class_names_the_handler_itself() -> None:
    """A handler whose ``unwrap()`` chain never ends is named after its own class, not theirs."""
    assert name(Front()) == "front"
