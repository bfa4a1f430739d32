"""The example service does what its docstring says."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import workit

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLE = Path(__file__).parents[1] / "examples" / "mirror_service.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example module, imported from its file."""
    spec = importlib.util.spec_from_file_location("mirror_service", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _workers(
    example: ModuleType, directory: Path
) -> tuple[workit.ParallelWorker, workit.SequenceWorker]:
    combined = example.build(directory)
    parallel, sequence = combined.workers
    assert isinstance(parallel, workit.ParallelWorker)
    assert isinstance(sequence, workit.SequenceWorker)
    return parallel, sequence


@pytest.mark.anyio
async def test_mirror_handlers_copy_and_clean(example: ModuleType, tmp_path: Path) -> None:
    """One execution of each parallel handler mirrors new files and removes stale ones."""
    parallel, _ = _workers(example, tmp_path)
    (tmp_path / "mirror" / "gone.txt").write_text("stale")
    for handler in parallel.handlers:
        await handler.ensure()
    assert sorted(p.name for p in (tmp_path / "mirror").iterdir()) == ["note-0001.txt"]


@pytest.mark.anyio
async def test_pipeline_reports_then_stops_quietly(example: ModuleType, tmp_path: Path) -> None:
    """A pass writes the report; an unchanged inbox stops the next pass with an ignored error."""
    _, sequence = _workers(example, tmp_path)
    (tmp_path / "inbox" / "a.txt").write_text("a")
    await sequence.ensure()
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["files"]) == ["a.txt"]
    with pytest.raises(workit.HandlerError) as raised:
        await sequence.ensure()
    assert raised.value.handler == "scan"
    assert sequence.registry.ignores(raised.value.__cause__)  # type: ignore[arg-type]
