"""What the built distributions must hold: the wheel its py.typed, the sdist its documents.

Usage: ``python scripts/check_dist.py DIST_FOLDER``, the folder ``python -m build``
wrote one wheel and one sdist into. Prints the wheel's path; exits 1 naming
whatever is missing.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL_FILES = ("workit/__init__.py", "workit/py.typed")
SDIST_FILES = ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "src/workit/py.typed")


def only(folder: Path, pattern: str) -> Path:
    """The one file in ``folder`` matching ``pattern``."""
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        sys.exit(f"expected one {pattern} in {folder}, found {[path.name for path in found]}")
    return found[0]


def missing(names: list[str], wanted: tuple[str, ...]) -> list[str]:
    """The ``wanted`` paths that no name in ``names`` ends with."""
    return [
        path
        for path in wanted
        if not any(name.endswith(f"/{path}") or name == path for name in names)
    ]


def main() -> None:
    """Check the wheel and the sdist in the folder given."""
    folder = Path(sys.argv[1])
    wheel = only(folder, "*.whl")
    sdist = only(folder, "*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = archive.namelist()
    with tarfile.open(sdist) as archive:
        in_sdist = archive.getnames()
    licenses = [name for name in in_wheel if "/licenses/" in name and name.endswith("LICENSE")]
    problems = [f"{wheel.name} lacks {path}" for path in missing(in_wheel, WHEEL_FILES)]
    problems += [f"{sdist.name} lacks {path}" for path in missing(in_sdist, SDIST_FILES)]
    if not licenses:
        problems.append(f"{wheel.name} lacks its LICENSE")
    if problems:
        sys.exit("\n".join(problems))
    print(wheel)


if __name__ == "__main__":
    main()
