"""The engines: parallel loops, a DAG pipeline, and both combined."""

from __future__ import annotations

from workit.worker._engine import Engine
from workit.worker._lifecycle import State, Worker
from workit.worker.combined import CombinedWorker
from workit.worker.parallel import ParallelWorker
from workit.worker.sequence import SequenceWorker

__all__ = ["CombinedWorker", "Engine", "ParallelWorker", "SequenceWorker", "State", "Worker"]
