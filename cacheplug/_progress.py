"""Progress reporting for long state loads: a terminal bar and a periodic log line.

Both are ``progress(done, total)`` callables, as :meth:`StateStore.load` and
:func:`inspect_state` accept; neither needs a dependency.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ("LogProgress", "TerminalProgress")


class TerminalProgress:
    """A one-line ``\\r`` progress bar on *stream* (stderr); silent unless it is a TTY.

    Redraws at most every ``min_interval`` seconds, plus the final step; :meth:`close`
    erases the line so the report that follows starts clean. Not thread-safe.

    :param label: text before the bar, e.g. ``"loading snapshot.bin"``.
    :param stream: where to draw; defaults to ``sys.stderr`` at call time.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        *,
        min_interval: float = 0.1,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty is not None and isatty())
        self._label = label
        self._interval = min_interval
        self._width = width
        self._clock = clock
        self._last_draw = -float("inf")
        self._drawn = 0  # length of the line on screen, 0 when none

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if done < total and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        fraction = done / total if total > 0 else 1.0
        filled = round(fraction * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        line = f"{self._label} [{bar}] {fraction:4.0%} {done:,}/{total:,} entries"
        pad = " " * max(0, self._drawn - len(line))
        self.stream.write(f"\r{line}{pad}")
        self.stream.flush()
        self._drawn = len(line)

    def close(self) -> None:
        """Erase the bar, if one was drawn."""
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


class LogProgress:
    """Log ``done of total entries`` at INFO when a load runs long, then periodically.

    Quiet for the first ``after`` seconds (a normal start logs nothing extra), then at
    most once every ``every`` seconds.

    :param logger: where to log.
    :param label: names the load in the message, e.g. ``"cacheplug 'default'"``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        *,
        after: float = 2.0,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._label = label
        self._every = every
        self._clock = clock
        self._next = clock() + after

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._every
        percent = 100.0 * done / total if total > 0 else 100.0
        self._logger.info(
            "%s: loading state, %s of %s entries (%.0f%%)",
            self._label,
            f"{done:,}",
            f"{total:,}",
            percent,
        )
