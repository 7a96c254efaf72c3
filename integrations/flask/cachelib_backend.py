"""``CachelibCache``: a ``cachelib.BaseCache`` backed by cacheplug, for Flask-Caching users.

Switch a Flask-Caching app with one line::

    app.config["CACHE_TYPE"] = "cacheplug.integrations.flask.flask_caching_backend"

Semantics are cachelib's (``SimpleCache``'s): ``timeout=None`` is the default timeout,
``0`` never expires, a negative timeout stores nothing, ``timedelta`` timeouts are
accepted; values go through the instance's ``serializer`` (pickle by default, so the
cache holds copies); ``get`` returns ``None`` on a miss. Unlike ``SimpleCache`` it reads
without a lock, evicts by SIEVE rather than by earliest expiry, and ``add``, ``inc`` and
``dec`` are atomic (compare-and-set on the entry's version).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

from cachelib import BaseCache
from cachelib.serializers import SimpleSerializer

from cacheplug.cache import NO_EXPIRY, ShardedTTLCache
from cacheplug.errors import ConfigurationError

__all__ = ("CachelibCache", "flask_caching_backend")


def _shards_for(maxsize: int) -> int:
    """Shard only big caches: each shard evicts on its own, so a small bound stays global."""
    return 16 if maxsize >= 16 * 1024 else 1


class CachelibCache(BaseCache):
    """A ``cachelib.BaseCache`` (every method, cachelib's return values) over cacheplug.

    ``CachelibCache()`` with no arguments is a new, empty, independent cache. Pass
    ``cache=`` to share a :class:`~cacheplug.cache.ShardedTTLCache` (for example a
    ``FlaskCachePlug`` runtime's, which adds persistence and stats); give it a
    ``key_prefix`` so :meth:`clear` removes only this backend's keys.

    :param threshold: the most entries of a cache of its own (cachelib's name; 0 means 500).
    :param default_timeout: seconds or a timedelta for ``timeout=None``; 0 never expires.
    :param ignore_delete_many_errors: if False, :meth:`delete_many` raises RuntimeError
        when a key is still present after the delete.
    :param cache: a cache to share instead of creating one.
    :param key_prefix: prepended to every key; needed when ``cache`` is shared.
    :param timer: the monotonic clock of a cache of its own (inject a fake in tests).
    :raises ConfigurationError: ``threshold`` or ``key_prefix`` has the wrong type.

    Thread-safe. ``serializer`` is a class attribute like ``SimpleCache``'s; Flask-Caching
    replaces it per instance when ``CACHE_SERIALIZER`` is set.
    """

    serializer: Any = SimpleSerializer()

    def __init__(
        self,
        threshold: int = 500,
        default_timeout: int | dt.timedelta = 300,
        ignore_delete_many_errors: bool = True,
        *,
        cache: ShardedTTLCache | None = None,
        key_prefix: str = "",
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
            raise ConfigurationError(f"threshold must be an int >= 0, got {threshold!r}")
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"key_prefix must be a str, got {key_prefix!r}")
        self.default_timeout = _to_seconds(default_timeout)
        self.ignore_delete_many_errors = ignore_delete_many_errors
        if cache is None:
            maxsize = threshold or 500
            cache = ShardedTTLCache(
                maxsize=maxsize, ttl=None, shards=_shards_for(maxsize), timer=timer
            )
        self.cache = cache
        self.key_prefix = key_prefix

    # -- helpers --------------------------------------------------------------------------

    def _key(self, key: str) -> Hashable:
        return self.key_prefix + key if self.key_prefix else key

    def _ttl(self, timeout: int | float | dt.timedelta | None) -> float:
        """cachelib timeout -> ShardedTTLCache ttl: 0 never expires, < 0 already expired."""
        seconds = self.default_timeout if timeout is None else _to_seconds(timeout)
        if seconds == 0:
            return NO_EXPIRY
        return float(seconds) if seconds > 0 else -1.0

    def _load(self, data: Any) -> Any:
        return None if data is None else self.serializer.loads(data)

    # -- cachelib.BaseCache -----------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value for ``key``, or None if it is missing or expired."""
        return self._load(self.cache.get(self._key(key)))

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if an entry was held for it, live or expired.

        That is ``SimpleCache``'s answer: it keeps an expired entry until it prunes, and
        ``delete`` reports it. Here an expired entry is held until a read, the sweeper
        or eviction drops it; once dropped, ``delete`` returns False.
        """
        full = self._key(key)
        held = self.cache.holds(full)
        return self.cache.delete(full) or held

    def get_many(self, *keys: str) -> list[Any]:
        """A list of the values of ``keys``, None for each miss."""
        return [self.get(k) for k in keys]

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """Like :meth:`get_many`, as a dict ``key -> value``."""
        return dict(zip(keys, self.get_many(*keys), strict=True))

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Store ``value`` (overwriting); True, or False if the serializer failed."""
        data = self.serializer.dumps(value)
        if data is None:
            return False
        return self.cache.set(self._key(key), data, self._ttl(timeout))

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Like :meth:`set` but only if ``key`` has no live entry; False if it has one."""
        data = self.serializer.dumps(value)
        if data is None:
            return False
        return self.cache.set(self._key(key), data, self._ttl(timeout), if_version=0)

    def set_many(
        self, mapping: dict[str, Any], timeout: int | dt.timedelta | None = None
    ) -> list[Any]:
        """Store every pair; returns the keys that were stored."""
        return [key for key, value in mapping.items() if self.set(key, value, timeout)]

    def delete_many(self, *keys: str) -> list[Any]:
        """Delete ``keys``; returns those now absent (missing keys count as deleted).

        :raises RuntimeError: ``ignore_delete_many_errors`` is False and a key survived.
        """
        deleted, failed = [], []
        for key in keys:
            if self.delete(key) or not self.has(key):
                deleted.append(key)
            else:
                failed.append(key)
        if failed and not self.ignore_delete_many_errors:
            raise RuntimeError(f"Failed to delete keys: {failed}")
        return deleted

    def has(self, key: str) -> bool:
        """True if ``key`` has a live entry; counts neither a hit nor a miss."""
        return self._key(key) in self.cache

    def clear(self) -> bool:
        """Remove every entry (only this prefix's keys when ``key_prefix`` is set); True."""
        if self.key_prefix:
            self.cache.delete_matching(fnmatch_escape(self.key_prefix) + "*")
        else:
            self.cache.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add ``delta`` atomically (a missing key counts as 0); the new value.

        Like ``SimpleCache`` the entry gets the default timeout again.
        """
        return self._add_delta(key, delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Subtract ``delta`` atomically (a missing key counts as 0); the new value."""
        return self._add_delta(key, -delta)

    def _add_delta(self, key: str, delta: int) -> int | None:
        full = self._key(key)
        ttl = self._ttl(None)
        while True:  # compare-and-set: retry if another writer got in between
            entry = self.cache.get_entry(full)
            current = (self._load(entry.value) if entry is not None else None) or 0
            value = current + delta
            data = self.serializer.dumps(value)
            if data is None:
                return None
            version = entry.version if entry is not None else 0
            if self.cache.set(full, data, ttl, if_version=version):
                return value

    def __repr__(self) -> str:
        return (
            f"<CachelibCache prefix={self.key_prefix!r} default_timeout={self.default_timeout} "
            f"{self.cache!r}>"
        )


def _to_seconds(timeout: object) -> int | float:
    """cachelib's timeout conversion: a timedelta rounds up to whole seconds."""
    if isinstance(timeout, dt.timedelta):
        return math.ceil(timeout.total_seconds())
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return timeout
    raise TypeError(f"timeout must be an int or datetime.timedelta, got {type(timeout).__name__!r}")


def fnmatch_escape(text: str) -> str:
    """Escape ``*``, ``?`` and ``[`` so ``fnmatch`` matches ``text`` literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def flask_caching_backend(
    app: Any, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
) -> CachelibCache:
    """The factory Flask-Caching calls for ``CACHE_TYPE`` = this function's dotted path.

    If ``FlaskCachePlug.init_app(app)`` ran before ``Cache.init_app(app)``, the backend
    shares that app's runtime cache (persistence, stats, the ``flask cacheplug`` CLI)
    under ``CACHE_KEY_PREFIX``; otherwise it is a cache of its own bounded by
    ``CACHE_THRESHOLD``. ``CACHE_DEFAULT_TIMEOUT`` and ``CACHE_OPTIONS`` arrive in
    ``kwargs``, ``CACHE_ARGS`` in ``args``.
    """
    state = getattr(app, "extensions", {}).get("cacheplug")
    if state is not None:
        # The runtime still starts on first use; starting loads saved state into this cache.
        kwargs = {**kwargs, "cache": state.runtime.cache}
        kwargs.setdefault("key_prefix", config.get("CACHE_KEY_PREFIX") or "flask_cache_")
    else:
        kwargs = {"threshold": config.get("CACHE_THRESHOLD", 500), **kwargs}
    try:
        return CachelibCache(*args, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(
            f"CACHE_OPTIONS/CACHE_ARGS do not fit CachelibCache: {exc}"
        ) from exc
