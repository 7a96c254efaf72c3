"""Turn a ``CACHES`` entry's ``OPTIONS`` into :class:`cacheplug.CachePlug` keyword arguments.

Django's own options (``MAX_ENTRIES``, ``CULL_FREQUENCY``) are read by ``BaseCache``;
everything else in ``OPTIONS`` is a cacheplug option, spelled in upper case. The system
checks and the backend share this one parser, so a bad option is reported the same way
by ``manage.py check`` and by the first use of the cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from django.core.exceptions import ImproperlyConfigured

__all__ = ("DJANGO_OPTIONS", "EVICTION_POLICIES", "PLUG_OPTIONS", "BackendOptions", "parse")

#: Options ``BaseCache`` reads itself.
DJANGO_OPTIONS: Final = frozenset({"MAX_ENTRIES", "CULL_FREQUENCY"})
#: OPTIONS name -> ``CachePlug`` keyword.
PLUG_OPTIONS: Final[Mapping[str, str]] = {
    "SHARDS": "shards",
    "STATE_DIR": "state_dir",
    "SECRET": "secret",
    "FSYNC": "fsync",
    "WAL_MAX_BYTES": "wal_max_bytes",
    "REDIS_URL": "redis_url",
    "REDIS_PREFIX": "redis_prefix",
    "WRITE_THROUGH": "write_through",
    "REDIS_SOCKET_TIMEOUT": "redis_socket_timeout",
    "REDIS_BREAKER_THRESHOLD": "redis_breaker_threshold",
    "REDIS_BREAKER_RESET": "redis_breaker_reset",
    "REDIS_LOCK_TTL": "redis_lock_ttl",
    "REDIS_CLUSTER": "redis_cluster",
    "SWEEP_INTERVAL": "sweep_interval",
    "QUEUE_SIZE": "queue_size",
    "BATCH_SIZE": "batch_size",
    "PUT_TIMEOUT": "put_timeout",
    "TIMER": "timer",
}
#: ``"cull"``: Django's MAX_ENTRIES/CULL_FREQUENCY culling (the default, as LocMemCache);
#: ``"sieve"``: cacheplug's SIEVE eviction bounded by MAX_ENTRIES, no culling.
EVICTION_POLICIES: Final = ("cull", "sieve")
_OWN: Final = frozenset({"EVICTION"})
#: Bound of the store in "cull" mode: culling, not SIEVE, keeps it to MAX_ENTRIES.
_UNBOUNDED: Final = 2**31


class BackendOptions:
    """The parsed form of one ``CACHES`` entry: the plug's options and the backend's own.

    :ivar plug_options: keyword arguments for :class:`cacheplug.CachePlug`.
    :ivar eviction: ``"cull"`` or ``"sieve"``.
    """

    __slots__ = ("eviction", "plug_options")

    def __init__(self, plug_options: dict[str, Any], eviction: str) -> None:
        self.plug_options = plug_options
        self.eviction = eviction


def parse(
    location: str, params: Mapping[str, Any], secret_key: str | None = None
) -> BackendOptions:
    """Parse ``params`` (a ``CACHES`` entry) for the store named ``location``.

    :param location: the entry's ``LOCATION`` (the store's name; aliases sharing it share
        the store).
    :param params: the ``CACHES`` entry (``OPTIONS`` is read from it).
    :param secret_key: the default signing secret (Django's ``SECRET_KEY``), used when
        ``STATE_DIR`` or ``REDIS_URL`` is set and ``OPTIONS`` has no ``SECRET``.
    :raises ImproperlyConfigured: an unknown option name, or a value of the wrong kind;
        the message names the option and lists the valid ones. Ranges are checked by
        ``CachePlug`` itself when the store is built.
    """
    options = params.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"CACHES OPTIONS for LOCATION {location!r} must be a dict, got {options!r}"
        )
    unknown = sorted(str(k) for k in options if k not in DJANGO_OPTIONS | _OWN | set(PLUG_OPTIONS))
    if unknown:
        valid = sorted(DJANGO_OPTIONS | _OWN | set(PLUG_OPTIONS))
        raise ImproperlyConfigured(
            f"unknown cacheplug OPTIONS {unknown} for LOCATION {location!r}; valid: {valid}"
        )
    eviction = options.get("EVICTION", "cull")
    if eviction not in EVICTION_POLICIES:
        raise ImproperlyConfigured(
            f"OPTIONS EVICTION must be one of {EVICTION_POLICIES}, got {eviction!r}"
        )
    plug: dict[str, Any] = {
        kwarg: options[name] for name, kwarg in PLUG_OPTIONS.items() if name in options
    }
    if plug.get("state_dir") is not None:
        plug["state_dir"] = str(plug["state_dir"])
    # Saved state and values shared through Redis are both signed: SECRET_KEY is the
    # default key for either, as the same settings run in every process.
    signs = plug.get("state_dir") is not None or plug.get("redis_url") is not None
    if signs and not plug.get("secret") and secret_key:
        plug["secret"] = secret_key
    if eviction == "sieve":
        max_entries = options.get("MAX_ENTRIES", params.get("max_entries", 300))
        try:
            plug["maxsize"] = int(max_entries)
        except (TypeError, ValueError):
            raise ImproperlyConfigured(
                f"OPTIONS MAX_ENTRIES must be an int, got {max_entries!r}"
            ) from None
    else:
        plug["maxsize"] = _UNBOUNDED
    # Every backend call passes its own ttl (from TIMEOUT), so the store's default is
    # never used; None keeps a call that forgets one from expiring early.
    plug["ttl"] = None
    plug["name"] = location or "default"
    return BackendOptions(plug, eviction)


def ttl_from_timeout(timeout: float | None) -> float:
    """Django's timeout in seconds (None: never) as a ShardedTTLCache ttl (inf: never)."""
    if timeout is None:
        return math.inf
    return float(timeout) if timeout > 0 else -1.0


def default_secret() -> str | None:
    """Django's ``SECRET_KEY``, or None when it is unset or empty."""
    from django.conf import settings

    try:
        return settings.SECRET_KEY or None
    except (AttributeError, ImproperlyConfigured):  # Django refuses an empty one
        return None
