"""The benchmark scripts keep working: every scenario once, at tiny sizes."""

from __future__ import annotations

import pytest

from bench.smoke import run_smoke


@pytest.mark.timeout(180)
def test_every_benchmark_scenario_runs() -> None:
    """Each scenario runs for each system in a child process without an error."""
    records = run_smoke()
    errors = [record for record in records if record["status"] == "error"]
    assert not errors, errors
    scenarios = {record["scenario"] for record in records}
    assert scenarios >= {"overhead", "scale", "blocking", "dag", "shutdown"}
    workit_ok = {r["scenario"] for r in records if r["system"] == "workit" and r["status"] == "ok"}
    assert workit_ok == scenarios
