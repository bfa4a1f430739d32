"""The engines: parallel loops, a DAG pipeline, and both combined."""

from __future__ import annotations

from workit.worker._loop import Engine, Worker
from workit.worker.combined import CombinedWorker
from workit.worker.parallel import ParallelWorker
from workit.worker.sequence import SequenceWorker

__all__ = ["CombinedWorker", "Engine", "ParallelWorker", "SequenceWorker", "Worker"]
