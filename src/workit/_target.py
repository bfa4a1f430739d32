"""Finding the worker a command-line TARGET names."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from workit.errors import describe
from workit.worker import CombinedWorker, Worker

__all__ = ["TargetError", "load"]


class TargetError(Exception):
    """A TARGET that does not lead to a worker; the message says why, in one line."""


def load(target: str) -> Worker:
    """The worker ``target`` names: ``package.module:attr`` or ``path/to/file.py:attr``.

    ``attr`` (dotted names allowed) is a worker, a list of workers (run
    combined) or a function of no arguments returning either. The folder the
    command runs in is importable, as with ``python -m``.
    """
    location, _, attribute = target.rpartition(":")
    if not location or not attribute:
        raise TargetError(
            f"TARGET {target!r} must look like package.module:attr or path/to/file.py:attr"
        )
    module = _import(location)
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError as error:
            raise TargetError(f"{location} has no attribute {attribute!r}") from error
        except Exception as error:
            raise TargetError(
                f"reading {attribute!r} of {location} failed: {describe(error)}"
            ) from error
    if callable(value) and not isinstance(value, Worker):
        try:
            value = value()
        except Exception as error:
            raise TargetError(f"{target}() failed: {describe(error)}") from error
        what = f"{target}() returned"
    else:
        what = f"{target} is"
    return _worker(value, what)


def _worker(value: object, what: str) -> Worker:
    if isinstance(value, Worker):
        return value
    if isinstance(value, (list, tuple)) and value:
        for index, item in enumerate(value):
            if not isinstance(item, Worker):
                raise TargetError(
                    f"{what} a list whose item {index} is {_kind(item)}, not a worker"
                )
        try:
            return CombinedWorker(*value)
        except (TypeError, ValueError) as error:
            raise TargetError(
                f"{what} a list of workers that cannot run together: {error}"
            ) from error
    raise TargetError(f"{what} {_kind(value)}, not a worker, a list of workers or a factory of one")


def _kind(value: object) -> str:
    if isinstance(value, (list, tuple)) and not value:
        return "an empty list"
    kind = type(value).__qualname__
    return f"{'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}"


def _import(location: str) -> object:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if location.endswith(".py") or os.sep in location or "/" in location:
        return _import_file(Path(location))
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as error:
        if error.name is not None and (
            location == error.name or location.startswith(error.name + ".")
        ):
            raise TargetError(
                f"no module named {error.name!r} (looking for {location!r})"
            ) from error
        raise TargetError(f"importing {location} failed: {describe(error)}") from error
    except Exception as error:
        raise TargetError(f"importing {location} failed: {describe(error)}") from error


def _import_file(path: Path) -> object:
    if not path.is_file():
        raise TargetError(f"no such file: {path}")
    name = path.stem if path.stem.isidentifier() else "workit_target"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # The file's folder is importable, as when running `python path/to/file.py`.
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise TargetError(f"importing {path} failed: {describe(error)}") from error
    return module
