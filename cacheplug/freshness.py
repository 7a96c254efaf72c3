"""Freshness without stampedes: the policy pieces behind ``get_or_set``'s freshness options.

:class:`~cacheplug.cache.ShardedTTLCache` calls into this module; nothing here touches a
shard. What lives here:

* :func:`make_policy`: the validated, cached :class:`FreshnessPolicy` for one set of
  ``get_or_set`` keyword arguments (``early_refresh``, ``stale_while_revalidate``,
  ``stale_if_error``, ``negative_ttl``, ``negative_exceptions``).
* :func:`xfetch_due`: the probabilistic early-refresh test of XFetch ("Optimal
  Probabilistic Cache Stampede Prevention", Vattani, Chierichetti and Lowenstein,
  VLDB 2015).
* :class:`Backoff`: exponential backoff with jitter and a bounded number of attempts,
  for refreshes that fail while a stale value is served.
* :class:`EntryMeta`: what an entry remembers about its last load (how long the factory
  took, how long to keep it after expiry, the current failure streak).
* :class:`CachedError`: a "not found" exception cached by negative caching.
* :class:`Refresher`: runs background refreshes (sync factories on an executor, async
  ones as tasks on the running loop) and cancels or abandons them on ``close()``.
  :class:`RefreshPool` is its fallback executor: a few threads, never one per key.

See ``docs/freshness.md`` for the user-facing contract.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import queue
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from cacheplug.errors import ConfigurationError

__all__ = (
    "Backoff",
    "CachedError",
    "EntryMeta",
    "FreshnessPolicy",
    "FreshnessStats",
    "RefreshExecutor",
    "RefreshPool",
    "Refresher",
    "make_policy",
    "xfetch_due",
)

logger = logging.getLogger("cacheplug.freshness")

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class RefreshExecutor(Protocol):
    """Anything with ``submit(fn)`` that runs ``fn()`` later on another thread.

    :class:`~cacheplug.worker.DeferredWorker`, :class:`RefreshPool` and
    ``concurrent.futures.ThreadPoolExecutor`` all qualify.
    """

    def submit(self, fn: Callable[[], object], /) -> object: ...


# -- policy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    """The freshness options of one ``get_or_set`` call, validated.

    Windows are seconds on the cache's timer; 0 means off. ``keep`` is how long after
    expiry an entry stored under this policy is kept for stale serving.
    """

    early_refresh: float
    stale_while_revalidate: float
    stale_if_error: float
    negative_ttl: float | None
    negative_exceptions: tuple[type[BaseException], ...]

    @property
    def keep(self) -> float:
        return max(self.stale_while_revalidate, self.stale_if_error)

    def is_negative(self, error: BaseException) -> bool:
        """Whether ``error`` means "not found" and is cached for ``negative_ttl``."""
        return bool(self.negative_exceptions) and isinstance(error, self.negative_exceptions)

    def meta(self, took: float) -> EntryMeta | None:
        """The metadata for a value whose factory took ``took`` seconds, or None if unused."""
        if self.early_refresh or self.stale_while_revalidate or self.stale_if_error:
            return EntryMeta(self.keep, max(took, 0.0))
        return None


def _seconds(name: str, value: float | None, *, positive: bool = False) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigurationError(f"{name} must be a number of seconds or None, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def make_policy(
    early_refresh: float | None = None,
    stale_while_revalidate: float | None = None,
    stale_if_error: float | None = None,
    negative_ttl: float | None = None,
    negative_exceptions: ExceptionTypes = (),
) -> FreshnessPolicy:
    """Validate ``get_or_set``'s freshness options and return their policy (memoised).

    :raises ConfigurationError: (a ``ValueError``) for a negative or non-numeric
        window, a ``negative_exceptions`` that is not an exception type or a tuple of
        them, or ``negative_exceptions`` without ``negative_ttl``.
    """
    try:
        return _make_policy(
            early_refresh, stale_while_revalidate, stale_if_error, negative_ttl, negative_exceptions
        )
    except TypeError:  # unhashable option, such as a list of exception types
        raise ConfigurationError(
            "negative_exceptions must be an exception type or a tuple of them, "
            f"got {negative_exceptions!r}"
        ) from None


@functools.lru_cache(maxsize=256)
def _make_policy(
    early_refresh: float | None,
    stale_while_revalidate: float | None,
    stale_if_error: float | None,
    negative_ttl: float | None,
    negative_exceptions: ExceptionTypes,
) -> FreshnessPolicy:
    if isinstance(negative_exceptions, type):
        negative_exceptions = (negative_exceptions,)
    if not isinstance(negative_exceptions, tuple) or not all(
        isinstance(t, type) and issubclass(t, Exception) for t in negative_exceptions
    ):
        raise ConfigurationError(
            "negative_exceptions must be an Exception subclass or a tuple of them, "
            f"got {negative_exceptions!r}"
        )
    if negative_exceptions and negative_ttl is None:
        raise ConfigurationError(
            "negative_exceptions needs negative_ttl: how many seconds to cache the error"
        )
    if negative_ttl is not None:
        negative_ttl = _seconds("negative_ttl", negative_ttl, positive=True)
        if negative_ttl == math.inf:
            raise ConfigurationError("negative_ttl must be finite: a 'not found' must expire")
    early = _seconds("early_refresh", early_refresh)
    if early == math.inf:
        raise ConfigurationError("early_refresh (XFetch beta) must be finite, usually 0.5 to 2")
    return FreshnessPolicy(
        early,
        _seconds("stale_while_revalidate", stale_while_revalidate),
        _seconds("stale_if_error", stale_if_error),
        negative_ttl,
        negative_exceptions,
    )


def xfetch_due(
    now: float, expires_at: float, delta: float, beta: float, random: Callable[[], float]
) -> bool:
    """XFetch: whether a read at ``now`` should recompute an entry expiring at ``expires_at``.

    True when ``now - delta * beta * ln(U) >= expires_at``, ``U`` uniform on (0, 1]. With
    ``r = expires_at - now`` left, that happens with probability ``exp(-r / (delta *
    beta))``: 1 at expiry, 1/e one ``delta * beta`` earlier. ``delta`` is how long the
    factory took; ``beta`` > 1 refreshes earlier, < 1 later. ``random()`` returns a float
    in [0, 1), as :func:`random.random` does.
    """
    scale = delta * beta
    if scale <= 0:
        return False
    left = expires_at - now
    if left > 40.0 * scale:  # probability below e**-40: skip the random draw
        return False
    return -scale * math.log(1.0 - random()) >= left


# -- backoff ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between retries of a failing refresh: exponential, capped, jittered, bounded.

    The delay after the n-th consecutive failure is ``min(max_delay, base * factor**(n-1))``
    scaled by a random factor in ``(1 - jitter, 1]``. After ``max_attempts`` failures in a
    row no retry is made until the entry's stale window ends.

    :raises ConfigurationError: for a non-positive ``base``, ``factor < 1``, ``jitter``
        outside [0, 1] or ``max_attempts < 1``.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.factor >= 1 or not self.max_delay >= self.base:
            raise ConfigurationError(
                f"Backoff needs base > 0, factor >= 1 and max_delay >= base, got {self!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"Backoff jitter must be from 0 to 1, got {self.jitter!r}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(
                f"Backoff max_attempts must be an int >= 1, got {self.max_attempts!r}"
            )

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """Seconds to wait after ``failures`` consecutive failures; ``inf`` once exhausted."""
        if failures >= self.max_attempts:
            return math.inf
        raw = min(self.max_delay, self.base * self.factor ** (failures - 1))
        return raw * (1.0 - self.jitter * random())


class EntryMeta:
    """What an entry stored by a freshness-aware ``get_or_set`` remembers.

    Mutated only under the entry's shard lock; read without it (a torn read only moves
    a refresh decision by one read).
    """

    __slots__ = ("delta", "failures", "keep", "retry_at")

    def __init__(self, keep: float, delta: float) -> None:
        self.keep = keep  # seconds after expiry the entry is kept for stale serving
        self.delta = delta  # seconds the factory took (XFetch's delta)
        self.failures = 0  # consecutive failed refreshes
        self.retry_at = 0.0  # no refresh before this time (backoff)


class CachedError:
    """A "not found" exception cached by ``negative_ttl``; ``get_or_set`` re-raises a copy.

    Plain ``get`` and ``get_entry`` return this object itself, since they never raise
    for a stored value.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (CachedError, (self.error,))

    def __repr__(self) -> str:
        return f"CachedError({self.error!r})"

    def fresh_error(self) -> BaseException:
        """A copy of the cached exception (same type and args, no traceback) to raise.

        Each caller gets its own instance, so concurrent raises never share a traceback.
        """
        try:
            error = copy.copy(self.error)
        except Exception:  # an exception type that cannot be copied: share the original
            error = self.error
        return error.with_traceback(None)


# -- running refreshes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FreshnessStats:
    """Counters of the background refresh machinery (approximate under contention).

    ``stale_served`` counts reads answered with an expired value; ``refreshes`` the
    background refreshes started, ``refresh_failures`` those whose factory raised and
    ``abandoned`` those dropped by ``close()`` before their result could be stored.
    """

    stale_served: int
    refreshes: int
    refresh_failures: int
    abandoned: int
    pending_tasks: int


class RefreshPool:
    """A small pool of daemon threads for sync refreshes; the cache's fallback executor.

    Threads start on demand, up to ``max_workers``, named ``cacheplug-refresh``.
    :meth:`close` lets queued work run (each queued refresh sees the closed cache and
    returns at once), then joins every thread.
    """

    def __init__(self, max_workers: int = 2, name: str = "cacheplug-refresh") -> None:
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an int >= 1, got {max_workers!r}")
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, fn: Callable[[], object], /) -> None:
        """Run ``fn()`` on a pool thread. :raises RuntimeError: after :meth:`close`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("RefreshPool is closed")
            self._queue.put(fn)
            # _idle = idle threads - queued items nobody has claimed yet
            if self._idle <= 0 and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1  # one idle thread will take it

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop intake, let the threads finish what is queued, join them.

        :returns: True if every thread is gone, False if one still runs after ``timeout``.
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        return not any(t.is_alive() for t in threads if t is not threading.current_thread())

    def _run(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # a refresh logs its own failures; this is a last resort
                logger.exception("cacheplug background refresh crashed")
            with self._lock:
                self._idle += 1


class Refresher:
    """Starts, tracks and stops one cache's background refreshes.

    Sync refreshes go to ``executor`` (the runtime's deferred worker), or to a lazily
    created :class:`RefreshPool` the refresher owns. Async refreshes are tasks on the
    running loop, kept in a set so :meth:`close` can cancel them. Thread-safe.
    """

    def __init__(self, executor: RefreshExecutor | None = None) -> None:
        self.executor = executor
        self.closed = False
        self._pool: RefreshPool | None = None
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stale_served = 0
        self.refreshes = 0
        self.refresh_failures = 0
        self.abandoned = 0

    def submit(self, fn: Callable[[], object]) -> bool:
        """Run ``fn()`` in the background; False if closed or the executor refused it."""
        executor = self.executor
        if executor is None:
            with self._lock:
                if self.closed:
                    return False
                if self._pool is None:
                    self._pool = RefreshPool()
                executor = self._pool
        if self.closed or getattr(executor, "closed", False):
            return False  # a closed DeferredWorker would run fn inline, in the reader
        try:
            executor.submit(fn)
        except RuntimeError:  # executor shut down meanwhile
            return False
        self.refreshes += 1
        return True

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run ``coro`` as a tracked task on the running loop; False (coro closed) if closed."""
        with self._lock:
            if self.closed:
                coro.close()
                return False
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
        task.add_done_callback(self._forget)
        self.refreshes += 1
        return True

    def _forget(self, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._tasks.discard(task)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop starting refreshes, cancel async ones, join the pool's threads.

        Tasks on another thread's loop are cancelled through ``call_soon_threadsafe`` and
        finish when that loop next runs. Returns False if a pool thread outlived
        ``timeout`` (a factory that ignores it is still running).
        """
        with self._lock:
            self.closed = True
            tasks = list(self._tasks)
            pool = self._pool
        for task in tasks:
            loop = task.get_loop()
            try:
                if _running_loop() is loop:
                    task.cancel()
                else:
                    loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # that loop is closed; its tasks are gone with it
                pass
        return pool.close(timeout) if pool is not None else True

    async def aclose(self, timeout: float | None = 5.0) -> bool:
        """:meth:`close`, then wait for the cancelled tasks of the running loop to end."""
        loop = asyncio.get_running_loop()
        ok = await asyncio.to_thread(self.close, timeout) if self._pool else self.close(timeout)
        with self._lock:
            mine = [t for t in self._tasks if t.get_loop() is loop]
        if mine:
            await asyncio.wait(mine, timeout=timeout)
        return ok

    def stats(self) -> FreshnessStats:
        return FreshnessStats(
            self.stale_served,
            self.refreshes,
            self.refresh_failures,
            self.abandoned,
            len(self._tasks),
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
