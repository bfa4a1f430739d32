"""The smoke run, for CI: every scenario at tiny sizes, to keep the scripts working.

It checks that the benchmarks run, not how fast anything is. Without
APScheduler installed its records say ``unavailable`` instead of failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench._plan import plan_all
from bench._runner import run

if TYPE_CHECKING:
    from bench._scenarios import Record

__all__ = ["run_smoke"]


def run_smoke() -> list[Record]:
    """Run ``python -m bench all --smoke``'s measurements and return their records.

    Each record has ``scenario``, ``case``, ``system`` and ``status``; when
    the scripts work every status is ``ok``, ``skipped`` (APScheduler has no
    DAG) or ``unavailable`` (APScheduler not installed), never ``error``
    (whose ``reason`` says what went wrong). Takes about half a minute on 2 cores.
    """
    return [
        record for record in run(plan_all(smoke=True), smoke=True) if record["scenario"] != "meta"
    ]
