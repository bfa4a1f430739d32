"""workit: run reconciliation-style background jobs in Python services.

Write handlers (objects with ``ensure()``), give them to a ``ParallelWorker``
(each in its own loop), a ``SequenceWorker`` (a DAG run as one pipeline) or a
``CombinedWorker`` (both), and every execution is timed, counted and logged.
"""

from __future__ import annotations

import importlib.metadata

from workit import handler, metrics, status, testing
from workit.backoff import Backoff
from workit.errors import HandlerError, HandlerTimeout
from workit.handler import Handler
from workit.registry import Registry
from workit.worker import CombinedWorker, ParallelWorker, SequenceWorker, Worker

__version__: str = importlib.metadata.version("workit-jobs")
"""The version of the installed distribution, ``workit-jobs``."""

__all__ = [
    "Backoff",
    "CombinedWorker",
    "Handler",
    "HandlerError",
    "HandlerTimeout",
    "ParallelWorker",
    "Registry",
    "SequenceWorker",
    "Worker",
    "__version__",
    "handler",
    "metrics",
    "status",
    "testing",
]
