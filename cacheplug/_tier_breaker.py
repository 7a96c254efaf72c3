"""A circuit breaker for the Redis tier: stop calling a Redis that is down, retry later.

States: ``closed`` (calls go through), ``open`` (calls are skipped until
``reset_timeout`` has passed), ``half-open`` (one probe call is let through; success
closes the breaker, failure opens it again). Errors are counted; a state change is
logged once, not every failed call, so an outage does not flood the logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ("CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker")

logger = logging.getLogger("cacheplug.tier")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Count failures and decide whether the next Redis call may run.

    :param threshold: consecutive failures that open the breaker (>= 1).
    :param reset_timeout: seconds an open breaker waits before letting a probe through.
    :param on_recover: called (outside the lock) when the breaker closes after being
        open: the tier flushes its local copies there.
    :param on_open: called (outside the lock) when a closed breaker opens.
    :param timer: monotonic clock in seconds (inject a fake one in tests).
    :param name: a label for the log lines.

    Thread-safe.
    """

    def __init__(
        self,
        threshold: int = 3,
        reset_timeout: float = 2.0,
        *,
        on_recover: Callable[[], None] | None = None,
        on_open: Callable[[], None] | None = None,
        timer: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._on_recover = on_recover
        self._on_open = on_open
        self._timer = timer
        self._name = name
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        #: every failed call, for stats
        self.errors = 0
        #: times the breaker opened
        self.opened = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        with self._lock:
            if self._state == OPEN and self._timer() - self._opened_at >= self.reset_timeout:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Whether a call may run now. Cheap when closed (one attribute read)."""
        if self._state == CLOSED:
            return True
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN and self._timer() - self._opened_at >= self.reset_timeout:
                self._state = HALF_OPEN
                self._probing = False
            if self._state == HALF_OPEN and not self._probing:
                self._probing = True  # one probe at a time
                return True
            return False

    def success(self) -> None:
        """Record a successful call; closes a half-open breaker."""
        if self._state == CLOSED and not self._failures:
            return
        recovered = False
        with self._lock:
            self._failures = 0
            if self._state != CLOSED:
                self._state = CLOSED
                self._probing = False
                recovered = True
        if recovered:
            logger.warning("cacheplug %s: Redis is reachable again; breaker closed", self._name)
            if self._on_recover is not None:
                self._on_recover()

    def failure(self, exc: BaseException) -> None:
        """Record a failed call; opens the breaker at ``threshold`` consecutive failures."""
        with self._lock:
            self.errors += 1
            self._failures += 1
            if self._state == HALF_OPEN or (
                self._state == CLOSED and self._failures >= self.threshold
            ):
                was = self._state
                self._state = OPEN
                self._opened_at = self._timer()
                self._probing = False
                self.opened += 1
            else:
                return
        if was == CLOSED:
            if self._on_open is not None:
                self._on_open()
            logger.warning(
                "cacheplug %s: Redis unavailable (%s: %s); breaker open, serving from the "
                "local tier only, retrying every %.1fs",
                self._name,
                type(exc).__name__,
                exc,
                self.reset_timeout,
            )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} errors={self.errors}>"
