"""docs/bad-input.md: every row is backed by tests that exist, and no fault test is left out."""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad-input.md"
SECTIONS = ("Construction time", "Run time")
COLUMNS = ["input", "when", "what workit does", "test"]
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[^`]*\])?`")
# The test files written for this table: each of their tests must appear in it.
FAULT_FILES = (
    "tests/worker/test_faults.py",
    "tests/test_backend_faults.py",
    "tests/worker/test_shutdown_faults.py",
    "tests/test_bad_construction.py",
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One row of a table in the document."""

    section: str
    line: int
    cells: list[str]

    @property
    def tests(self) -> list[tuple[str, str]]:
        """The (file, function) of every node id in the test column."""
        return [(path, function) for path, function, _ in NODE_ID.findall(self.cells[-1])]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@functools.cache
def parse() -> tuple[dict[str, list[str]], list[Row]]:
    """The header of each section's table, and every row of them."""
    headers: dict[str, list[str]] = {}
    rows: list[Row] = []
    section = ""
    previous = ""
    for number, line in enumerate(TABLE.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            headers[section] = cells(previous)
        elif line.startswith("|") and section in headers:
            rows.append(Row(section=section, line=number, cells=cells(line)))
        previous = line
    return headers, rows


def row_params() -> list[object]:
    return [pytest.param(row, id=f"line-{row.line}") for row in parse()[1]]


@functools.cache
def module(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"))


def definitions(path: str) -> dict[str, ast.stmt]:
    """Module-level functions, classes and assignments of a test file, by name."""
    found: dict[str, ast.stmt] = {}
    for node in module(path).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def defined_tests(path: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        name: node
        for name, node in definitions(path).items()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and name.startswith("test_")
    }


def marked_xfail(path: str, function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether an xfail mark reaches ``function``: in its decorators, or in a module-level
    name they use (a mark bound to a name, a list of params, a function building them)."""
    names = definitions(path)
    seen: set[str] = set()
    pending: list[ast.AST] = list(function.decorator_list)
    while pending:
        node = pending.pop()
        for inner in ast.walk(node):
            if isinstance(inner, ast.Attribute) and inner.attr == "xfail":
                return True
            if isinstance(inner, ast.Name) and inner.id in names and inner.id not in seen:
                seen.add(inner.id)
                pending.append(names[inner.id])
    return False


def test_the_document_has_both_tables_with_the_four_columns() -> None:
    """A construction-time and a run-time table, each with input, when, what, test."""
    headers, rows = parse()
    assert list(headers) == list(SECTIONS)
    assert all(header == COLUMNS for header in headers.values())
    for section in SECTIONS:
        assert sum(row.section == section for row in rows) >= 10


@pytest.mark.parametrize("row", row_params())
def test_every_row_names_tests_that_exist(row: Row) -> None:
    """Each row fills every column and names at least one test that exists in its file."""
    assert len(row.cells) == len(COLUMNS), f"line {row.line}: {row.cells}"
    assert all(row.cells), f"line {row.line} has an empty column"
    assert row.tests, f"line {row.line} names no test as `tests/...py::test_name`"
    for path, function in row.tests:
        assert (ROOT / path).is_file(), f"line {row.line}: no file {path}"
        if function not in defined_tests(path):
            pytest.fail(f"line {row.line}: {path} defines no {function}")


@pytest.mark.parametrize("row", row_params())
def test_wrong_behaviour_is_held_by_an_xfail_test(row: Row) -> None:
    """A row saying workit is wrong names tests marked xfail (strict) until it is fixed."""
    if "**wrong**" not in row.cells[2]:
        return
    for path, function in row.tests:
        node = defined_tests(path)[function]
        assert marked_xfail(path, node), f"line {row.line}: {function} is not marked xfail"


@pytest.mark.parametrize("path", FAULT_FILES)
def test_every_fault_test_is_in_the_table(path: str) -> None:
    """Every test of the fault files appears in some row, so the table stays complete."""
    named = {test for row in parse()[1] for test in row.tests}
    missing = [name for name in defined_tests(path) if (path, name) not in named]
    assert missing == []
