"""``python -m workit``: the ``workit`` command."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the command line, or say which extra it needs."""
    try:
        from workit.cli import main as cli_main
    except ModuleNotFoundError as error:
        sys.exit(
            "workit: the command line needs the cli extra: "
            f"pip install 'workit-jobs[cli]' ({error})"
        )
    cli_main()


if __name__ == "__main__":
    main()
