"""The benchmark report: medians over rounds, their range, and the verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench._report import before_after, markdown

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


def _scale(case: str, system: str, **values: float) -> Record:
    return {"scenario": "scale", "case": case, "system": system, "status": "ok", **values}


def test_a_polled_case_is_judged_against_the_same_case_without_polling() -> None:
    """/status rows appear for the polled case only; their targets use the unpolled case."""
    plain = "10 handlers, cooler 1 s, loop-lag probe"
    polled = f"{plain}, /status every 1 s"
    lag = {"loop_lag_samples": 9.0, "window_s": 10.0}
    records: list[Record] = [
        _scale(plain, "workit", lateness_p99_ms=20.0, cpu_cores=0.2, **lag),
        _scale(plain, "workit", loop_thread_cpu_cores=0.1, loop_lag_total_ms_per_s=5.0, **lag),
        _scale(plain, "bare", lateness_p99_ms=18.0, cpu_cores=0.1, **lag),
        _scale(
            polled,
            "workit",
            lateness_p99_ms=26.0,
            cpu_cores=0.12,
            status_requests=10,
            loop_thread_cpu_cores=0.104,  # 0.004 x 10 s / 10 requests = 4 ms each
            loop_lag_total_ms_per_s=11.0,  # 6 ms/s x 10 s / 10 requests = 6 ms each
            **lag,
        ),
        {"scenario": "scale", "case": polled, "system": "bare", "status": "skipped", "reason": "-"},
    ]
    table = markdown(records)
    cpu_line = next(line for line in table.splitlines() if "thread CPU ms per /status" in line)
    assert polled in cpu_line
    assert cpu_line.endswith("| 4.0 | n/a |  | ≤ 5 ms | met |")
    lag_line = next(line for line in table.splitlines() if "loop lag ms per /status" in line)
    assert lag_line.endswith("| 6.0 | n/a |  | ≤ 5 ms | **missed** |")
    against = next(line for line in table.splitlines() if "against the same without" in line)
    assert against.endswith("| ≤ without /status + 5 ms | **missed** |")  # 26 > 20 + 5
    cpu = [line for line in table.splitlines() if polled in line and "CPU cores used" in line]
    assert cpu[0].split("|")[5].strip() == "n/a"  # bare: not applicable
    assert "| 1.20x | ≤ 1.5x bare | met |" in cpu[0]  # against bare without polling


def test_before_after_table_has_both_sources_and_bare() -> None:
    """Records from two sources become two workit columns, each judged against bare."""
    records: list[Record] = [
        {"scenario": "meta", "status": "ok", "rounds": 1, "sources": {"before": {}, "after": {}}}
    ]
    for system, source, value in (
        ("workit", "before", 160.0),
        ("workit", "after", 120.0),
        ("bare", None, 100.0),
    ):
        record = _shutdown(system, 1, value)
        if source:
            record["source"] = source
        records.append(record)
    cells = _row(before_after(records), "stop() to stopped, ms")
    assert cells[3:6] == ["160.0", "120.0", "100.0"]
    assert cells[6:] == ["1.60x", "1.20x", "≤ 1.5x bare", "**missed**", "met"]
