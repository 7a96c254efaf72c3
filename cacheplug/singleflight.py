"""One in-flight load per key, shared by threads and asyncio tasks.

A :class:`Flight` is created by the first caller that misses a key (the leader); later
callers wait on it instead of running the factory again. It resolves once, with a
value, an error, or "retry" (the leader was cancelled or interrupted, so a waiter
should try to lead a new flight rather than inherit a cancellation that was not its own).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ("Flight",)


class Flight:
    """The shared outcome of one factory call.

    Thread-safe: ``resolve`` may run in any thread; waiters may be threads
    (:meth:`wait`) or asyncio tasks on any loop (:meth:`async_waiter`).
    """

    __slots__ = (
        "_async_waiters",
        "_done",
        "_lock",
        "background",
        "error",
        "gens",
        "retry",
        "stale",
        "value",
    )

    def __init__(self, gens: tuple[tuple[Any, int], ...] = (), background: bool = False) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.value: Any = None
        self.error: BaseException | None = None
        self.retry = False
        # Set when a delete, overwrite or clear of the key happens while the factory
        # runs: the result is then returned to callers but never stored, so a value
        # computed from data that was deleted meanwhile is not cached (a "lease").
        self.stale = False
        # Tag generations read when the flight started: tags invalidated while the
        # factory runs make the stored entry invisible at once.
        self.gens = gens
        # A background refresh (stale-while-revalidate, early refresh): the cache's
        # close() marks these stale, so nothing they load is stored after close.
        self.background = background

    def resolve(
        self, value: Any = None, error: BaseException | None = None, retry: bool = False
    ) -> None:
        """Publish the outcome and wake every waiter. Call exactly once."""
        with self._lock:
            self.value, self.error, self.retry = value, error, retry
            self._done.set()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_complete, future)
            except RuntimeError:  # the waiter's loop is closed; nobody is left to wake
                pass

    def wait(self) -> None:
        """Block the calling thread until the flight resolves."""
        self._done.wait()

    def async_waiter(self) -> asyncio.Future[None] | None:
        """A future on the running loop that completes when the flight resolves.

        Returns None when the flight has already resolved.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._done.is_set():
                return None
            future: asyncio.Future[None] = loop.create_future()
            self._async_waiters.append((loop, future))
            return future


def _complete(future: asyncio.Future[None]) -> None:
    if not future.done():  # a waiter task that was cancelled has a cancelled future
        future.set_result(None)
