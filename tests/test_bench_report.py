"""The benchmark report: medians over rounds, their range, and the verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench._report import markdown

if TYPE_CHECKING:
    from bench._scenarios import Record


def _shutdown(system: str, turn: int, milliseconds: float) -> Record:
    return {
        "scenario": "shutdown",
        "case": "10 idle handlers",
        "system": system,
        "status": "ok",
        "round": turn,
        "shutdown_ms": milliseconds,
    }


def _row(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if f"| {label} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_rounds_are_reported_as_median_with_their_range() -> None:
    """Three rounds: the cell shows the median and the range; the verdict judges the median."""
    records = [
        {"scenario": "meta", "status": "ok", "rounds": 3},
        _shutdown("workit", 1, 90.0),
        _shutdown("bare", 1, 80.0),
        _shutdown("workit", 2, 150.0),
        _shutdown("bare", 2, 120.0),
        _shutdown("workit", 3, 60.0),
        _shutdown("bare", 3, 100.0),
    ]
    cells = _row(markdown(records), "stop() to stopped, ms")
    assert cells[3:5] == ["90.0 (60.0 to 150.0)", "100.0 (80.0 to 120.0)"]
    assert cells[-3:] == ["0.90x", "≤ 100 ms", "met"]


def test_a_failed_round_is_counted_and_left_out_of_the_median() -> None:
    """A round that failed is named in the cell; the median is over the rounds that worked."""
    failed: Record = {
        "scenario": "shutdown",
        "case": "10 idle handlers",
        "system": "workit",
        "status": "error",
        "reason": "timed out",
        "round": 2,
    }
    records = [_shutdown("workit", 1, 120.0), failed, _shutdown("workit", 3, 140.0)]
    cells = _row(markdown(records), "stop() to stopped, ms")
    assert cells[3] == "130.0 (120.0 to 140.0) (1 failed)"
    assert cells[-1] == "**missed**"
