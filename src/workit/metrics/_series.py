"""The names, help texts and buckets of the series every backend records."""

from __future__ import annotations

__all__ = ["BUCKETS", "DURATION", "DURATION_HELP", "LABELS", "TOTAL", "TOTAL_HELP"]

TOTAL = "worker_handler_execution_total"
TOTAL_HELP = "Handler executions, by outcome."
DURATION = "worker_handler_execution_duration_seconds"
DURATION_HELP = "Duration of handler executions in seconds, by outcome."
LABELS = ("env", "handler", "success")
BUCKETS = (0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0)
