"""One measurement in a process of its own: ``python -m bench._child SCENARIO SYSTEM PARAMS``.

``PARAMS`` is a JSON object: the scenario's settings, plus ``case`` (the
label echoed in every record) and optionally ``profile`` (a file path: the
run is profiled with pyinstrument and its text report written there).
Prints one JSON line per record, then leaves with ``os._exit`` so that no
thread a system left behind can hold the process open.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import traceback
from pathlib import Path

from bench._scenarios import RUNNERS, Params, Record
from bench._systems import make

__all__ = ["main"]


def _run(scenario: str, system: str, params: Params) -> list[Record]:
    return asyncio.run(RUNNERS[scenario](lambda: make(system), params))


def _profiled(scenario: str, system: str, params: Params, output: Path) -> list[Record]:
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    try:
        return _run(scenario, system, params)
    finally:
        profiler.stop()
        output.write_text(profiler.output_text(unicode=True, color=False), encoding="utf-8")


def _finite(record: Record) -> Record:
    """``record`` with NaN and infinities as ``None``, which JSON can hold."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }


def main(argv: list[str]) -> int:
    """Run one scenario against one system; print its records as JSON lines."""
    scenario, system, raw = argv
    settings = json.loads(raw)
    case = str(settings.pop("case"))
    profile = settings.pop("profile", None)
    params: Params = {key: float(value) for key, value in settings.items()}
    head: Record = {"scenario": scenario, "case": case, "system": system}
    try:
        if profile is None:
            records = _run(scenario, system, params)
        else:
            records = _profiled(scenario, system, params, Path(profile))
            head["profiled"] = True
    except Exception as error:
        traceback.print_exc()
        records = [{"status": "error", "reason": f"{type(error).__name__}: {error}"}]
    for record in records:
        print(
            json.dumps({**head, "status": "ok", "params": settings, **_finite(record)}), flush=True
        )
    return 1 if any(record.get("status") == "error" for record in records) else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
