"""``CachePlugCache``: a Django ``CACHES`` backend on cacheplug's sharded in-process cache.

It behaves as Django's ``LocMemCache`` does, method by method (timeouts, versions,
``KEY_FUNCTION``, key warnings, copies of mutable values, ``MAX_ENTRIES`` culling, one
store per ``LOCATION``), and adds what LocMemCache lacks: lock-free reads, persistence
across restarts and a background worker. How it stays fast:

* **Keys.** With the default ``KEY_FUNCTION`` the key is one f-string, and the
  memcached-safety check is two C calls (``isprintable`` and ``in``); Django's own
  ``validate_key`` runs only for keys that fail them, so the warnings are exactly
  Django's.
* **Values.** Immutable builtins (str, bytes, int, float, complex, bool, None, and
  tuples/frozensets of them) are stored as they are: nobody can mutate them, so no copy
  is needed. Anything else is pickled on ``set`` and unpickled on every ``get``, so the
  caller always works on a copy, as with LocMemCache. A pickled value is kept in a
  one-item ``list``, a type never stored as is, so the two cannot be confused.
* **Timeouts** become the store's ttl: ``None`` never expires, ``0`` and negative
  values expire at once (``set`` stores nothing and removes the old value).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    default_key_func,
)
from django.core.exceptions import ImproperlyConfigured

from cacheplug import CachePlug, ConfigurationError

from . import lifecycle
from .options import default_secret, parse, ttl_from_timeout

__all__ = ("CachePlugCache",)

_MISSING: Any = object()
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
_ATOMS: Final = frozenset({str, bytes, int, float, complex, bool, type(None)})
_MAX_KEY_LENGTH: Final = 250  # memcached's, as Django's MEMCACHE_MAX_KEY_LENGTH
_dumps = pickle.dumps
_loads = pickle.loads


def _is_immutable(value: Any, depth: int = 0) -> bool:
    """True for an immutable builtin, or a tuple/frozenset made only of them (nested)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if (kind is tuple or kind is frozenset) and depth < 8 and len(value) <= 64:
        return all(_is_immutable(item, depth + 1) for item in value)
    return False


def _stored(value: Any) -> Any:
    """The form a value is stored in: itself if immutable, else ``[pickled bytes]``.

    :raises pickle.PickleError: (or whatever ``pickle.dumps`` raises) as LocMemCache does.
    """
    if type(value) in _ATOMS or _is_immutable(value):
        return value
    return [_dumps(value, _PROTOCOL)]


class CachePlugCache(BaseCache):
    """A Django cache backend on a :class:`cacheplug.CachePlug` shared by ``LOCATION``.

    Configure it in ``CACHES`` with ``"BACKEND": "cacheplug.integrations.django.CachePlugCache"``.
    ``OPTIONS`` takes Django's ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` plus cacheplug's
    ``SHARDS``, ``STATE_DIR``, ``SECRET`` (default ``SECRET_KEY``), ``FSYNC``,
    ``WAL_MAX_BYTES``, ``REDIS_URL``, ``SWEEP_INTERVAL``, ``QUEUE_SIZE``, ``BATCH_SIZE``,
    ``PUT_TIMEOUT``, ``TIMER`` and ``EVICTION`` (``"cull"``, the default, or
    ``"sieve"``); see ``docs/django.md``.

    Every method is thread-safe and never blocks on I/O (with ``FSYNC="always"`` a write
    waits for its log record to reach the disk). The ``a*`` twins run the same code
    directly, without ``sync_to_async``: there is nothing to wait for.

    :raises django.core.exceptions.ImproperlyConfigured: for an unknown or invalid option.

    .. versionadded:: 0.1
    """

    pickle_protocol = _PROTOCOL

    def __init__(self, location: str, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        parsed = parse(location, params, default_secret())
        try:
            self._plug = lifecycle.plug_for(location, parsed.plug_options)
        except ConfigurationError as exc:
            raise ImproperlyConfigured(
                f"CACHES LOCATION {location!r}: {exc} (set it in OPTIONS in upper case)"
            ) from exc
        self._location = location
        self._cache = self._plug.cache
        self._cull_enabled = parsed.eviction == "cull"
        self._default_ttl = ttl_from_timeout(self.default_timeout)
        # The one-f-string key path is valid only while nothing overrides key making.
        cls = type(self)
        self._fast_keys = (
            self.key_func is default_key_func
            and cls.make_key is BaseCache.make_key
            and cls.validate_key is BaseCache.validate_key
            and cls.make_and_validate_key is BaseCache.make_and_validate_key
        )

    # -- public extras -------------------------------------------------------------------

    @property
    def plug(self) -> CachePlug:
        """The shared :class:`cacheplug.CachePlug` of this LOCATION (stats, tags, save)."""
        return self._plug

    # -- helpers -------------------------------------------------------------------------

    def _key(self, key: Any, version: int | None) -> str:
        if self._fast_keys:
            key = f"{self.key_prefix}:{self.version if version is None else version}:{key}"
            if len(key) > _MAX_KEY_LENGTH or " " in key or not key.isprintable():
                self.validate_key(key)
            return key
        return self.make_and_validate_key(key, version=version)

    def _ttl(self, timeout: Any) -> float:
        if timeout is DEFAULT_TIMEOUT:
            return self._default_ttl
        if timeout is None:
            return math.inf
        return timeout if timeout > 0 else -1.0

    def _make_room(self) -> None:
        """Cull as Django documents: expired entries first, then 1/CULL_FREQUENCY of the
        rest, or everything when CULL_FREQUENCY is 0.

        LocMemCache culls the least recently *read* entries; the store keeps no read
        order it could give cheaply (SIEVE keeps one "visited" bit per entry), so this
        culls the entries stored longest ago (the store's insertion order; overwriting a
        key keeps its place). ``EVICTION="sieve"`` keeps recently read entries instead,
        one eviction at a time.
        """
        cache = self._cache
        cache.expire()
        size = len(cache)
        if size < self._max_entries:
            return
        if self._cull_frequency == 0:
            cache.clear()
            return
        cache.delete_many(cache.keys()[: size // self._cull_frequency])

    def _forget_expired(self, made: str) -> None:
        """Remove ``made`` if it is stored but expired, as LocMemCache's reads do."""
        if self._cache.holds(made):
            self._cache.delete(made)

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value of ``key`` (a copy if it is mutable), or ``default``."""
        if self._fast_keys:
            key = f"{self.key_prefix}:{self.version if version is None else version}:{key}"
            if len(key) > _MAX_KEY_LENGTH or " " in key or not key.isprintable():
                self.validate_key(key)
        else:
            key = self.make_and_validate_key(key, version=version)
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            return default
        if type(value) is list:
            return _loads(value[0])
        return value

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the keys that hit; misses are left out."""
        found = {}
        get = self._cache.get
        for original in keys:
            value = get(self._key(original, version), _MISSING)
            if value is not _MISSING:
                found[original] = _loads(value[0]) if type(value) is list else value
        return found

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """True if ``key`` has a live value (an expired one is removed, as LocMemCache does)."""
        made = self._key(key, version)
        if made in self._cache:
            return True
        self._forget_expired(made)
        return False

    # -- writes --------------------------------------------------------------------------

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store a copy of ``value`` (``timeout``: seconds, None = forever, <= 0 = expire now).

        :raises pickle.PickleError: (or what ``pickle.dumps`` raises) for a value that
            cannot be pickled, exactly as LocMemCache.
        """
        if self._fast_keys:
            key = f"{self.key_prefix}:{self.version if version is None else version}:{key}"
            if len(key) > _MAX_KEY_LENGTH or " " in key or not key.isprintable():
                self.validate_key(key)
        else:
            key = self.make_and_validate_key(key, version=version)
        if type(value) not in _ATOMS:
            value = _stored(value)
        cache = self._cache
        if self._cull_enabled and len(cache) >= self._max_entries:
            self._make_room()
        cache.set(
            key, value, self._default_ttl if timeout is DEFAULT_TIMEOUT else self._ttl(timeout)
        )

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` has no live value; return whether it did."""
        key = self._key(key, version)
        value = _stored(value)  # before the check, so an unpicklable value always raises
        cache = self._cache
        if key in cache:
            return False
        if self._cull_enabled and len(cache) >= self._max_entries:
            self._make_room()
        return cache.set(key, value, self._ttl(timeout), if_version=0)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every pair; return ``[]`` (no key ever fails in memory)."""
        for key, value in data.items():
            self.set(key, value, timeout, version)
        return []

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a live ``key`` a new timeout; False if it has no live value."""
        return self._cache.touch(self._key(key, version), self._ttl(timeout))

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; return whether it was stored, as LocMemCache does.

        An entry that expired but was not read since is still stored, so deleting it
        returns True, exactly as with LocMemCache; ``get``, ``has_key`` and ``incr``
        remove an expired entry they meet (then ``delete`` returns False).
        """
        made = self._key(key, version)
        cache = self._cache
        stored = cache.holds(made)  # expired but not yet removed counts, as in LocMemCache
        return cache.delete(made) or stored

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove every key in ``keys``."""
        self._cache.delete_many([self._key(key, version) for key in keys])

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the value of ``key`` atomically, keeping its expiry.

        :raises ValueError: ``key`` has no live value (Django's message).
        :raises TypeError: the value does not support ``+ delta``.
        """
        made = self._key(key, version)
        cache = self._cache
        while True:
            entry = cache.get_entry(made)
            if entry is None:
                self._forget_expired(made)
                raise ValueError(f"Key '{made}' not found")
            old = entry.value
            new_value = (_loads(old[0]) if type(old) is list else old) + delta
            ttl = math.inf if entry.expires_at is None else entry.expires_at - cache.timer()
            # Compare-and-set on the version: a concurrent write makes us retry, so no
            # increment is lost (LocMemCache gets the same from its global lock).
            if ttl > 0 and cache.set(made, _stored(new_value), ttl, if_version=entry.version):
                return new_value
            if ttl <= 0:
                raise ValueError(f"Key '{made}' not found")

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Subtract ``delta``; see :meth:`incr`."""
        return self.incr(key, -delta, version)

    def clear(self) -> None:
        """Remove every entry of this LOCATION (shared by every alias using it)."""
        self._cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: Django calls this after every request; the plug stays open.

        Persistence and the worker stop at process exit (see ``lifecycle.close_all``).
        """

    # -- async twins: the same non-blocking code, no thread hop --------------------------

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self.get(key, default, version)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return self.get_many(keys, version)

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return self.has_key(key, version)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        self.set(key, value, timeout, version)

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        return self.add(key, value, timeout, version)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        return self.set_many(data, timeout, version)

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        return self.touch(key, timeout, version)

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return self.delete(key, version)

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        self.delete_many(keys, version)

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return self.incr(key, delta, version)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return self.incr(key, -delta, version)

    async def aget_or_set(
        self,
        key: Any,
        default: Any | Callable[[], Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        return self.get_or_set(key, default, timeout, version)

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr_version(key, delta, version)

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr_version(key, -delta, version)

    async def aclear(self) -> None:
        self.clear()

    async def aclose(self, **kwargs: Any) -> None:
        """Nothing to do (see :meth:`close`)."""

    def __repr__(self) -> str:
        return f"<CachePlugCache LOCATION={self._location!r} {self._cache!r}>"
