"""``Registry``: what every execution is reported to."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from workit._policy import contain, log
from workit.handler import Instrumented, Proxy
from workit.metrics import Backend, CountsLeases, Observes, Prometheus

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit.backoff import Backoff

__all__ = ["Registry"]


class Registry:
    """The environment, error filter, logger and metrics backend of workers.

    ``env`` labels every metric. ``ignore`` decides which exceptions are
    control flow rather than failures: they are counted as successes and not
    logged as errors (a sequence pass still stops on them). ``logger``
    defaults to ``logging.getLogger("workit")``, ``metrics`` to a
    ``workit.metrics.Prometheus()`` on prometheus_client's global registry.
    """

    __slots__ = (
        "_ignore",
        "_ignore_failed",
        "_metrics_failure_logged",
        "env",
        "logger",
        "metrics",
    )

    def __init__(
        self,
        env: str,
        *,
        ignore: Callable[[BaseException], bool] | None = None,
        logger: logging.Logger | None = None,
        metrics: Backend | None = None,
    ) -> None:
        if not isinstance(env, str) or not env:
            raise ValueError(f"Registry env must be a non-empty string, got {env!r}")
        if ignore is not None and not callable(ignore):
            raise TypeError(f"Registry ignore must be a function of an exception, got {ignore!r}")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"Registry logger must be a logging.Logger, got {logger!r}")
        if metrics is not None and not isinstance(metrics, Backend):
            raise TypeError(
                f"Registry metrics must be a workit.metrics backend "
                f"(an object with recorder(env, handler)), got {metrics!r}"
            )
        self.env: str = env
        self._ignore = ignore
        self._ignore_failed = False
        self._metrics_failure_logged = False
        self.logger: logging.Logger = logger if logger is not None else logging.getLogger("workit")
        self.metrics: Backend = metrics if metrics is not None else Prometheus()

    @property
    def ignore(self) -> Callable[[BaseException], bool] | None:
        """The error filter, or ``None`` when nothing is ignored."""
        return self._ignore

    def ignores(self, error: BaseException) -> bool:
        """Whether the ``ignore`` filter treats ``error`` as control flow.

        A filter that raises ignores nothing; its failure is logged once.
        """
        if self._ignore is None:
            return False
        try:
            return bool(self._ignore(error))
        except BaseException as failure:
            contain(failure)
            if not self._ignore_failed:
                self._ignore_failed = True
                log(
                    self.logger,
                    logging.ERROR,
                    "worker ignore filter failed",
                    exc_info=failure,
                )
            return False

    def wrap(
        self,
        handler: object,
        *,
        logger: logging.Logger | None = None,
        backoff: Backoff | None = None,
    ) -> Instrumented:
        """``handler`` in a ``Proxy`` and the metrics wrapper.

        Executions are recorded under this registry's ``env`` and logged to
        ``logger`` (default: this registry's logger); ``backoff`` is the wait
        after failures in a row that the failure records tell. A handler
        wrapped already is wrapped anew around its ``Proxy``, so that each
        execution is counted once.
        """
        if isinstance(handler, Instrumented):
            handler = handler.proxy
        proxy = handler if isinstance(handler, Proxy) else Proxy(handler)
        instrumented = Instrumented(
            proxy,
            record=self.metrics.recorder(self.env, proxy.name),
            filters=self,
            logger=logger if logger is not None else self.logger,
            backoff=backoff,
        )
        if isinstance(self.metrics, Observes):  # the gauges read its state when collected
            self.metrics.observe(self.env, proxy.name, instrumented)
        return instrumented

    def lease_counter(self) -> Callable[[str], None] | None:
        """The metrics backend's counter of lease events in this registry's ``env``
        (``CountsLeases``), or ``None`` when the backend has none."""
        if isinstance(self.metrics, CountsLeases):
            return self.metrics.lease_counter(self.env)
        return None

    def metrics_failed(self, handler: str, error: BaseException) -> None:
        """Log the first failure to record metrics; later ones would only repeat it."""
        if not self._metrics_failure_logged:
            self._metrics_failure_logged = True
            log(
                self.logger,
                logging.ERROR,
                "worker metrics recording failed",
                exc_info=error,
                extra={"handler": handler},
            )

    def __repr__(self) -> str:
        return f"Registry(env={self.env!r}, metrics={self.metrics!r})"
