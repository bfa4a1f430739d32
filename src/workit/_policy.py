"""What an exception from user code means to workit: decided here, once.

User code is everything workit calls but did not write: a handler's
``ensure()``, ``active()``, ``cooler()``, ``timeout()``, the registry's
``ignore`` filter, a metrics backend, a logging handler, a backoff's random
source. Whatever such code raises is contained where it is called:

- from ``ensure()``, ``active()``, ``cooler()`` or ``timeout()``: a failure
  of that handler's execution, counted and logged, after which the engine
  and every other handler go on;
- from a filter, a metrics backend, logging or a backoff: reported once, and
  the execution it served is still counted.

That includes every ``BaseException``, ``KeyboardInterrupt`` and
``SystemExit`` among them. A handler raising ``SystemExit`` (a library
calling ``sys.exit()`` on a bad response, say) or ``KeyboardInterrupt`` has
failed; it has no standing to stop the other handlers or the service, which
stop through ``Worker.stop()`` or a signal. Only cancellation passes
through, since it is how the engine itself stops executions; and on asyncio
only the engine's own cancellation (see ``_backend.is_cancellation``).
"""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Any

from workit._backend import is_cancellation

if TYPE_CHECKING:
    import logging

__all__ = ["contain", "log"]


def contain(error: BaseException) -> None:
    """Re-raise ``error`` when it is a cancellation; return for any other exception.

    Called first in every ``except BaseException`` around user code.
    """
    if is_cancellation(error):
        raise error


_logging_failed = False


def log(logger: logging.Logger, level: int, message: str, *args: object, **kwargs: Any) -> None:
    """``logger.log()``, except that a broken logging set-up never breaks a worker.

    Whatever a handler, filter or formatter raises (cancellation aside) is
    contained; the first failure is written to stderr, once per process, and
    later ones are dropped (the metrics still count every execution).
    """
    global _logging_failed
    try:
        logger.log(level, message, *args, **kwargs)
    except BaseException as error:
        contain(error)
        if not _logging_failed:
            _logging_failed = True
            sys.stderr.write("workit: logging failed, later failures are not reported:\n")
            traceback.print_exc()
