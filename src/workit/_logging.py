"""Log output for the command line: plain text or one JSON object per line."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Literal

__all__ = ["LogFormat", "configure", "current_format", "iso_time"]

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came through `extra`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, the ``extra`` fields last."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        line = super().formatMessage(record)
        fields = [
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        ]
        return " ".join([line, *fields]) if fields else line


def iso_time(record: logging.LogRecord) -> str:
    """When ``record`` was made, in ISO-8601 UTC to the millisecond:
    ``2026-12-01T21:38:05.633+00:00``."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class IsoJsonFormatter(JsonFormatter):
        """The JSON lines' ``time`` in ISO-8601 UTC, not logging's local ``asctime``
        (which has a comma before the milliseconds and no zone)."""

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            return iso_time(record)

    return IsoJsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        reserved_attrs=sorted(_STANDARD - {"message", "asctime", "name"}),
        json_default=repr,
    )


_format: LogFormat | None = None


def current_format() -> LogFormat | None:
    """The format ``configure()`` set up, if it was called."""
    return _format


def configure(level: str, log_format: LogFormat) -> None:
    """Send every log record of the process to stderr, as text or JSON lines."""
    global _format
    _format = log_format
    formatter = _json_formatter() if log_format == "json" else TextFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
