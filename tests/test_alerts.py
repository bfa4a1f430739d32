"""docs/alerts.yml: valid Prometheus rules that fire when they should, on series workit exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import workit
from tests.support import FakeState

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "alerts.yml"
UNIT_TESTS = ROOT / "tests" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


def rules() -> list[dict[str, Any]]:
    """The rules of docs/alerts.yml, all groups together."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def exposition() -> dict[str, set[str]]:
    """Each sample name of a real exposition of workit's series, with its labels."""
    prom = CollectorRegistry()
    backend = workit.metrics.Prometheus(prom)
    backend.observe("prod", "sync_users", FakeState())
    record = backend.recorder("prod", "sync_users")
    record(0.2, True)
    record(0.3, False)
    text = generate_latest(prom).decode()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def selectors(expression: str) -> tuple[set[str], set[str]]:
    """The series names and the matched label names of a PromQL expression."""
    unquoted = re.sub(r'"[^"]*"', '""', expression)
    labels = set(
        re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", " ".join(re.findall(r"\{[^}]*\}", unquoted)))
    )
    bare = re.sub(r"\[[^\]]*\]", "", re.sub(r"\{[^}]*\}", "", unquoted))
    names = {
        token
        for token in re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", bare)
        if token not in PROMQL_WORDS
    }
    return names, labels


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules docs/alerts.yml` finds no error."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_each_alert_fires_when_it_should_and_only_then() -> None:
    """promtool's unit tests of the rules (tests/alerts_test.yml) pass, annotations included."""
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_an_alert_with_a_severity_and_a_summary() -> None:
    """Each rule is a named alert with an expression, a severity label and a summary."""
    found = rules()
    assert len(found) >= 4
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Workit[A-Z]\w+", rule["alert"]), rule
        assert isinstance(rule["expr"], str)
        assert rule["expr"].strip()
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert rule["annotations"]["summary"], rule


def test_the_documented_alerts_are_there() -> None:
    """Failing in a row, no recent success, worker down and worker absent each have a rule."""
    expressions = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules()}
    assert (
        'worker_handler_consecutive_failures{job="workit"} >= 3'
        in (expressions["WorkitHandlerFailing"])
    )
    assert (
        'time() - worker_handler_last_success_timestamp_seconds{job="workit"} > 3 * 60'
        in expressions["WorkitHandlerNoRecentSuccess"]
    )
    assert expressions["WorkitWorkerDown"] == 'up{job="workit"} == 0'
    assert "absent(" in expressions["WorkitWorkerAbsent"]


def test_expressions_read_only_series_workit_exposes() -> None:
    """Every series an expression reads is in a real exposition of workit's, or is `up`."""
    exposed = set(exposition())
    for rule in rules():
        names, _ = selectors(rule["expr"])
        assert names, rule["expr"]
        assert names <= exposed | {"up"}, (rule["alert"], names - exposed)


def test_expressions_and_templates_use_labels_the_series_have() -> None:
    """Label matchers and the `$labels` of annotations name labels of the series read."""
    exposed = exposition()
    for rule in rules():
        names, matched = selectors(rule["expr"])
        available = set(TARGET_LABELS)
        for name in names - {"up"}:
            available |= exposed[name]
        assert matched <= available, (rule["alert"], matched - available)
        templates = " ".join(rule["annotations"].values())
        used = set(re.findall(r"\$labels\.(\w+)", templates))
        assert used <= available, (rule["alert"], used - available)


def test_the_unit_tests_cover_every_alert() -> None:
    """tests/alerts_test.yml tests every alert of docs/alerts.yml, firing at least once."""
    document = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in document["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules()}
