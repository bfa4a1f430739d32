"""Constructing a backend: validation, defaults, lazy drivers, and the one-engine rule."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

import workit.lease
from tests.lease.support import LOGGER
from workit.lease import Memory
from workit.lease._settings import redact

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def build(kind: str, **keywords: object) -> object:
    """A backend of ``kind`` with a valid group unless ``keywords`` says otherwise."""
    keywords.setdefault("group", "billing")
    if kind == "memory":
        return Memory(**keywords)  # type: ignore[arg-type]  # bad values on purpose
    if kind == "redis":
        return workit.lease.Redis(str(keywords.pop("url", REDIS)), **keywords)  # type: ignore[arg-type]
    return workit.lease.Postgres(str(keywords.pop("url", POSTGRES)), **keywords)  # type: ignore[arg-type]


KINDS = ["memory", "redis", "postgres"]


@pytest.mark.parametrize("flavour", KINDS)
@pytest.mark.parametrize(
    ("keywords", "named"),
    [
        ({"group": ""}, "group"),
        ({"group": 3}, "group"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"ttl": float("inf")}, "ttl"),
        ({"ttl": "15"}, "ttl"),
        ({"ttl": 10, "renew": 10}, "renew"),
        ({"ttl": 10, "renew": 11}, "renew"),
        ({"renew": 0}, "renew"),
        ({"renew": -1}, "renew"),
        ({"identity": 7}, "identity"),
        ({"identity": ""}, "identity"),
    ],
)
def test_bad_settings_are_value_errors_naming_the_value(
    flavour: str, keywords: dict[str, object], named: str
) -> None:
    """A bad group, ttl, renew or identity is a ValueError that names it."""
    with pytest.raises(ValueError, match=named):
        build(flavour, **keywords)


@pytest.mark.parametrize(
    ("flavour", "url"),
    [
        ("redis", "http://127.0.0.1:6379"),
        ("redis", "127.0.0.1:6379"),
        ("redis", "postgresql://x@y/z"),
        ("postgres", "redis://127.0.0.1"),
        ("postgres", "host=db dbname=app"),
        ("postgres", "mysql://x@y/z"),
    ],
)
def test_an_unknown_url_scheme_is_a_value_error(flavour: str, url: str) -> None:
    """Only redis:// and rediss:// (Redis), postgresql:// and postgres:// (PostgreSQL) pass."""
    with pytest.raises(ValueError, match="URL must start with"):
        build(flavour, url=url)


@pytest.mark.parametrize(
    ("flavour", "url"),
    [
        ("redis", "rediss://cache:6380/1"),
        ("postgres", "postgres://app@db/app"),
    ],
)
def test_the_other_scheme_is_accepted(flavour: str, url: str) -> None:
    """rediss:// and postgres:// are valid spellings."""
    build(flavour, url=url)


def test_the_url_in_errors_and_status_has_no_password() -> None:
    """A password never shows in an error message or the status."""
    with pytest.raises(ValueError) as error:
        workit.lease.Redis("http://user:hunter2@cache", group="g")
    assert "hunter2" not in str(error.value)
    postgres = workit.lease.Postgres(
        "postgresql://app:hunter2@db:5432/app?password=x&a=1", group="g"
    )
    assert postgres.backend == "postgresql://app@db:5432/app?a=1"


def test_redact_leaves_a_url_without_password_alone() -> None:
    """A URL with no password comes back as it was."""
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact("redis://:secret@host/0") == "redis://host/0"


@pytest.mark.parametrize("flavour", KINDS)
def test_defaults(flavour: str) -> None:
    """ttl is 15 s, renew ttl/5, the identity host-pid-suffix and new for every object."""
    first = build(flavour)
    second = build(flavour)
    settings = first.settings  # type: ignore[attr-defined]  # every backend has settings
    assert (settings.ttl, settings.renew, settings.margin) == (15.0, 3.0, 1.0)
    assert settings.identity.split("-")[-2] == str(os.getpid())
    assert settings.identity != second.settings.identity  # type: ignore[attr-defined]


def test_durations_may_be_timedeltas() -> None:
    """ttl and renew accept timedelta like every other duration."""
    memory = Memory(group="g", ttl=timedelta(seconds=4), renew=timedelta(seconds=1))
    assert (memory.settings.ttl, memory.settings.renew, memory.settings.margin) == (4.0, 1.0, 0.4)


def test_a_bad_schema_is_a_value_error() -> None:
    """The PostgreSQL schema must be a name of 1 to 63 bytes."""
    for schema in ("", "x" * 64):
        with pytest.raises(ValueError, match="schema"):
            workit.lease.Postgres(POSTGRES, group="g", schema=schema)


@pytest.mark.parametrize("flavour", ["redis", "postgres"])
def test_two_engines_may_not_lease_the_same_handler(flavour: str) -> None:
    """Two live memberships of one backend object sharing a unit are a ValueError."""
    leases = build(flavour)
    leases.membership(["a", "b"], engine="parallel", logger=LOGGER)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"\['b'\].*parallel.*set `name`"):
        leases.membership(["b", "c"], engine="sequence", logger=LOGGER)  # type: ignore[attr-defined]
    leases.membership(["c"], engine="sequence", logger=LOGGER)  # type: ignore[attr-defined]


def test_a_memory_replica_follows_the_one_engine_rule() -> None:
    """A replica view of Memory is one process: the rule holds there too."""
    replica = Memory(group="g").replica("a")
    replica.membership(["x"], engine="one", logger=LOGGER)
    with pytest.raises(ValueError, match="x"):
        replica.membership(["x"], engine="two", logger=LOGGER)


def test_memberships_of_plain_memory_are_replicas_of_their_own() -> None:
    """Workers sharing a Memory object act as replicas: same units, distinct identities."""
    memory = Memory(group="g", identity="demo")
    first = memory.membership(["x"], engine="one", logger=LOGGER)
    second = memory.membership(["x"], engine="two", logger=LOGGER)
    assert (first.identity, second.identity) == ("demo/1", "demo/2")


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ([], "at least one unit"),
        (["a", "a"], "distinct"),
        (["a", ""], "non-empty"),
        ("abc", "sequence"),
    ],
)
def test_bad_units_are_value_errors(units: list[str], message: str) -> None:
    """A membership needs distinct, non-empty unit names."""
    with pytest.raises(ValueError, match=message):
        Memory(group="g").membership(units, engine="e", logger=LOGGER)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (so hiding a driver touches nothing here)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=os.environ
    )


def test_importing_workit_lease_needs_no_driver() -> None:
    """``import workit.lease`` imports neither redis nor psycopg."""
    result = run_python(
        "import sys, workit.lease\n"
        "print(sorted(m for m in ('redis', 'psycopg', 'psycopg_pool') if m in sys.modules))"
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize(
    ("name", "driver", "extra"),
    [("Redis", "redis", "workit-jobs[redis]"), ("Postgres", "psycopg", "workit-jobs[postgres]")],
)
def test_a_missing_driver_is_an_import_error_naming_the_extra(
    name: str, driver: str, extra: str
) -> None:
    """Without its driver, using a backend raises ImportError that says what to install."""
    result = run_python(
        f"import sys\nsys.modules[{driver!r}] = None\nimport workit.lease\n"
        f"try:\n    workit.lease.{name}\nexcept ImportError as e:\n    print(e)\n"
    )
    assert f"pip install '{extra}'" in result.stdout, result.stderr


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    """The lazy names are only Redis and Postgres."""
    with pytest.raises(AttributeError, match="Nope"):
        _ = workit.lease.Nope
