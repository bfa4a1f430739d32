"""How completely workit's public API is typed, by ``pyright --verifytypes``.

Prints the completeness score and every public symbol whose type is not fully
known, and exits 1 when the score is below ``--minimum`` (percent). Run with
the virtualenv's Python, where workit and pyright are installed::

    .venv/bin/python scripts/typing_completeness.py --minimum 95
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE = "workit"


def verify(package: str) -> dict[str, Any]:
    """The ``typeCompleteness`` part of pyright's JSON report on ``package``."""
    pyright = Path(sys.executable).with_name("pyright")
    command = str(pyright) if pyright.exists() else shutil.which("pyright")
    if command is None:
        sys.exit("pyright is not installed (it is in the dev extra)")
    # pyright finds the package through the first `python` on PATH: this one's.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    done = subprocess.run(
        [command, "--verifytypes", package, "--ignoreexternal", "--outputjson"],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    # pyright exits 1 whenever a symbol is incomplete: the JSON says how many.
    try:
        report: dict[str, Any] = json.loads(done.stdout)["typeCompleteness"]
    except (ValueError, KeyError):
        sys.exit(f"pyright gave no completeness report:\n{done.stdout}{done.stderr}")
    if not report["symbols"]:
        sys.exit(f"pyright found no symbol in {package}:\n{done.stdout}")
    return report


def incomplete(report: dict[str, Any]) -> list[str]:
    """One line per symbol whose type is not fully known, with pyright's reasons."""
    lines = []
    for symbol in report["symbols"]:
        if symbol["isTypeKnown"] and not symbol["diagnostics"]:
            continue
        reasons = "; ".join(each["message"].splitlines()[0] for each in symbol["diagnostics"])
        lines.append(f"  {symbol['name']}" + (f": {reasons}" if reasons else ""))
    return lines


def main() -> None:
    """Check the score against ``--minimum``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minimum", type=float, default=95.0, help="percent (default 95)")
    arguments = parser.parse_args()
    report = verify(PACKAGE)
    score = 100 * float(report["completenessScore"])
    counts = report["exportedSymbolCounts"]
    print(
        f"{PACKAGE} type completeness: {score:.1f}% "
        f"({counts['withKnownType']} known, {counts['withAmbiguousType']} ambiguous, "
        f"{counts['withUnknownType']} unknown; minimum {arguments.minimum:g}%)"
    )
    missing = incomplete(report)
    if missing:
        print("Public symbols not fully typed:", *missing, sep="\n")
    if score < arguments.minimum:
        sys.exit(f"{PACKAGE} type completeness {score:.1f}% is below {arguments.minimum:g}%")


if __name__ == "__main__":
    main()
