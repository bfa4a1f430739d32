"""The benchmark scripts keep working: every scenario once, at tiny sizes."""

from __future__ import annotations

import pytest

from bench._plan import plan
from bench._runner import ROOT, run
from bench.smoke import run_smoke


@pytest.mark.timeout(240)
def test_every_benchmark_scenario_runs() -> None:
    """Each scenario runs for each system in a child process without an error."""
    records = run_smoke()
    errors = [record for record in records if record["status"] == "error"]
    assert not errors, errors
    scenarios = {record["scenario"] for record in records}
    assert scenarios >= {"overhead", "scale", "blocking", "dag", "shutdown"}
    workit_ok = {r["scenario"] for r in records if r["system"] == "workit" and r["status"] == "ok"}
    assert workit_ok == scenarios
    by_case = {(r["case"], r["system"]): r for r in records if r["scenario"] == "scale"}
    jitter = by_case["200 handlers, cooler 0.1 s, jitter 0.1", "workit"]
    assert jitter["lateness_reference"] == "planned wait"
    assert isinstance(jitter["lateness_vs_cooler_p1_ms"], float)
    assert jitter["lateness_vs_cooler_p1_ms"] < 0  # waits drawn short of the plain cooler
    polled = by_case["200 handlers, cooler 0.1 s, loop-lag probe, /status every 0.2 s", "workit"]
    assert polled["status_requests"]
    assert not polled["status_errors"]
    assert polled["status_body_kib"]
    assert polled["loop_lag_samples"]
    for case in ("jitter 0.1", "loop-lag probe, /status every 0.2 s"):
        assert by_case[f"200 handlers, cooler 0.1 s, {case}", "bare"]["status"] == "skipped"
    assert by_case["200 handlers, cooler 0.1 s, loop-lag probe", "bare"]["loop_lag_samples"]


@pytest.mark.timeout(120)
def test_before_measures_another_tree_beside_this_one() -> None:
    """With ``before``, workit runs from both trees in each round, labelled by source."""
    records = run(
        plan("shutdown", smoke=True), smoke=True, systems=["workit", "bare"], before=ROOT, rounds=2
    )
    meta, *rest = records
    sources = meta["sources"]
    assert isinstance(sources, dict)
    assert set(sources) == {"before", "after"}
    assert [(r["system"], r.get("source"), r["round"], r["status"]) for r in rest] == [
        ("workit", "after", 1, "ok"),
        ("workit", "before", 1, "ok"),
        ("bare", None, 1, "ok"),
        ("workit", "before", 2, "ok"),
        ("bare", None, 2, "ok"),
        ("workit", "after", 2, "ok"),
    ]
