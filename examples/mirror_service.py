"""A small but real workit service: mirror a directory and report on it.

Three parallel handlers, each in its own loop:

- ``DropFiles`` plays the outside world: it writes a file into the inbox
  every few seconds, so there is always something to do;
- ``MirrorInbox`` copies new and changed files from the inbox to the mirror;
- ``CleanStale`` deletes files from the mirror that left the inbox.

One sequence pipeline, run every 10 seconds: ``Scan`` lists the inbox and
raises ``NothingChanged`` when nothing changed since the last pass (control
flow: the registry's ``ignore`` filter makes it a quiet, successful stop);
``Checksum`` hashes each file; ``WriteReport`` writes ``report.json``.

Run it with ``workit run examples/mirror_service.py:service`` (HTTP endpoints
on 127.0.0.1:9090) or ``python examples/mirror_service.py``; Ctrl-C stops it.
It works in ``$WORKIT_EXAMPLE_DIR``, by default a folder in the temporary
directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import workit

log = logging.getLogger("workit.example")


class NothingChanged(Exception):
    """The inbox is as it was at the last pass: the pipeline has nothing to do."""


class DropFiles:
    """Writes a numbered file into the inbox; now and then removes an old one."""

    cooler = 3

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.count = 0

    def ensure(self) -> None:
        self.count += 1
        (self.inbox / f"note-{self.count:04}.txt").write_text(
            f"note {self.count} at {time.ctime()}\n"
        )
        if self.count % 4 == 0:
            (self.inbox / f"note-{self.count - 3:04}.txt").unlink(missing_ok=True)


class MirrorInbox:
    """Copies files that are new or changed in the inbox into the mirror."""

    cooler = 1

    def __init__(self, inbox: Path, mirror: Path) -> None:
        self.inbox = inbox
        self.mirror = mirror

    def ensure(self) -> None:
        for source in self.inbox.iterdir():
            target = self.mirror / source.name
            if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
                shutil.copy2(source, target)
                log.info("mirrored %s", source.name)


class CleanStale:
    """Deletes files from the mirror that are no longer in the inbox."""

    cooler = 5

    def __init__(self, inbox: Path, mirror: Path) -> None:
        self.inbox = inbox
        self.mirror = mirror

    def ensure(self) -> None:
        for target in self.mirror.iterdir():
            if not (self.inbox / target.name).exists():
                target.unlink()
                log.info("removed stale %s", target.name)


class Report:
    """What the pipeline's steps hand to each other."""

    def __init__(self, inbox: Path, output: Path) -> None:
        self.inbox = inbox
        self.output = output
        self.listing: dict[str, float] = {}
        self.checksums: dict[str, str] = {}


class Scan:
    """Lists the inbox; stops the pass quietly when nothing changed."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def ensure(self) -> None:
        listing = {path.name: path.stat().st_mtime for path in self.report.inbox.iterdir()}
        if listing == self.report.listing:
            raise NothingChanged
        self.report.listing = listing


class Checksum:
    """Hashes every file the scan found."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def ensure(self) -> None:
        self.report.checksums = {
            name: hashlib.sha256((self.report.inbox / name).read_bytes()).hexdigest()
            for name in sorted(self.report.listing)
            if (self.report.inbox / name).exists()
        }


class WriteReport:
    """Writes the checksums to report.json, atomically."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def ensure(self) -> None:
        body = {"generated": time.time(), "files": self.report.checksums}
        partial = self.report.output.with_suffix(".tmp")
        partial.write_text(json.dumps(body, indent=2))
        partial.replace(self.report.output)
        log.info("report written: %d files", len(self.report.checksums))


def build(directory: Path) -> workit.CombinedWorker:
    """The example's workers, working under ``directory``."""
    inbox, mirror = directory / "inbox", directory / "mirror"
    inbox.mkdir(parents=True, exist_ok=True)
    mirror.mkdir(parents=True, exist_ok=True)
    registry = workit.Registry("example", ignore=lambda error: isinstance(error, NothingChanged))
    report = Report(inbox, directory / "report.json")
    return workit.CombinedWorker(
        workit.ParallelWorker(
            [DropFiles(inbox), MirrorInbox(inbox, mirror), CleanStale(inbox, mirror)],
            registry=registry,
        ),
        workit.SequenceWorker(
            [[Scan(report)], [Checksum(report)], [WriteReport(report)]],
            cooler=10,
            registry=registry,
        ),
    )


def service() -> workit.CombinedWorker:
    """The example's workers, in ``$WORKIT_EXAMPLE_DIR`` or a temporary directory."""
    default = Path(tempfile.gettempdir()) / "workit-example"
    directory = Path(os.environ.get("WORKIT_EXAMPLE_DIR", default))
    log.info("working in %s", directory)
    return build(directory)


if __name__ == "__main__":
    # Without the workit command: plain logs, no HTTP endpoints.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    service().run()
