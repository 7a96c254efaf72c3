"""``CachePlug``'s options: their defaults, validation and conversion from strings.

Everything here runs once, when a ``CachePlug`` is built; nothing is on a request path.
``cacheplug.runtime`` re-exports ``DEFAULTS`` and ``FSYNC_POLICIES``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from cacheplug.errors import ConfigurationError

__all__ = (
    "DEFAULTS",
    "FSYNC_POLICIES",
    "build_config",
    "options_from_env",
    "options_from_mapping",
    "refuse_refresh_options",
    "validate",
)

FSYNC_POLICIES: Final = ("always", "everysec", "never")

#: Every option ``CachePlug`` accepts, with its default.
DEFAULTS: Final[Mapping[str, Any]] = {
    "maxsize": 100_000,
    "ttl": 300.0,
    "shards": 16,
    "timer": time.monotonic,
    "sweep_interval": 1.0,
    "queue_size": 10_000,
    "batch_size": 256,
    "put_timeout": 0.05,
    "state_dir": None,
    "secret": None,
    "fsync": "everysec",
    "wal_max_bytes": 64 << 20,
    "redis_url": None,
    "redis_prefix": None,
    "write_through": False,
    "redis_socket_timeout": 0.25,
    "redis_breaker_threshold": 3,
    "redis_breaker_reset": 2.0,
    "redis_lock_ttl": 30.0,
    "redis_cluster": False,
    "name": "default",
}


def build_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``options`` over ``DEFAULTS``, checked.

    :raises ConfigurationError: for an unknown option or an invalid value.
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ConfigurationError(
            f"unknown CachePlug option(s) {sorted(unknown)}; valid options: {sorted(DEFAULTS)}"
        )
    config = {**DEFAULTS, **options}
    validate(config)
    return config


def options_from_mapping(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Options from ``mapping``'s keys, lower-cased after removing ``prefix`` (see from_config)."""
    options = {}
    for key, value in mapping.items():
        if prefix:
            if not key.upper().startswith(prefix.upper()):
                continue
            key = key[len(prefix) :]
        options[key.lower()] = value
    return options


def options_from_env(
    environ: Mapping[str, str], prefix: str, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` overridden by each ``<prefix><OPTION>`` variable, converted (see from_env)."""
    options = dict(defaults)
    for option in DEFAULTS:
        variable = prefix + option.upper()
        if variable in environ:
            options[option] = from_env_string(option, variable, environ[variable])
    return options


#: Options for which ``from_env`` reads ``""`` and ``"none"`` as None.
_NULLABLE: Final = frozenset(("ttl", "state_dir", "secret", "redis_url", "redis_prefix"))
_BOOLS: Final[Mapping[str, bool]] = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def from_env_string(option: str, variable: str, text: str) -> Any:
    """Convert one environment string to the type of ``option``'s default."""
    word = text.strip().lower()
    if option in _NULLABLE and word in ("", "none"):
        return None
    default = DEFAULTS[option]
    try:
        # bool before int: bool is an int subclass
        if isinstance(default, bool):
            return _BOOLS[word]
        if isinstance(default, int):
            return int(word)
        if isinstance(default, float) and math.isfinite(number := float(word)):
            return number
        if default is None or isinstance(default, str):
            return text  # paths, URLs, secrets and names are used as written
    except (KeyError, ValueError):
        pass
    raise ConfigurationError(
        f"environment variable {variable}={text!r} is not valid: {option} needs {_env_type(option)}"
    )


def _env_type(option: str) -> str:
    """Describe the strings ``from_env`` accepts for ``option`` (for its error message)."""
    default = DEFAULTS[option]
    if isinstance(default, bool):
        return "a bool: 1/0, true/false, yes/no or on/off"
    if isinstance(default, int):
        return "an int, such as 10000"
    if isinstance(default, float):
        kind = "a finite number of seconds, such as 2.5"
        return kind + ", or '' or 'none' for None" if option in _NULLABLE else kind
    return "a callable, which an environment variable cannot hold; pass it in code"


def refuse_refresh_options(
    early_refresh: float | None, stale_while_revalidate: float | None, stale_if_error: float | None
) -> None:
    """The Redis tier's get_or_set runs no background refreshes: say so, naming the options."""
    given = [
        name
        for name, value in (
            ("early_refresh", early_refresh),
            ("stale_while_revalidate", stale_while_revalidate),
            ("stale_if_error", stale_if_error),
        )
        if value is not None
    ]
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} not supported by CachePlug.get_or_set when redis_url is set: "
            "background refreshes and stale copies are per process and would bypass the "
            "Redis lease (distributed single-flight). Supported across processes: ttl, "
            "tags, negative_ttl, negative_exceptions. For a per-process load with these "
            "options, call plug.cache.get_or_set(...) (see docs/redis.md)"
        )


def validate(config: dict[str, Any]) -> None:
    """Check the options ShardedTTLCache and DeferredWorker do not check themselves."""
    if config["fsync"] not in FSYNC_POLICIES:
        raise ConfigurationError(f"fsync must be one of {FSYNC_POLICIES}, got {config['fsync']!r}")
    # DeferredWorker calls it max_queue; check it here so the message says queue_size.
    queue_size = config["queue_size"]
    if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
        raise ConfigurationError(f"queue_size must be an int >= 1, got {queue_size!r}")
    interval = config["sweep_interval"]
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 0:
        raise ConfigurationError(
            f"sweep_interval must be seconds >= 0 (0 turns the sweep off), got {interval!r}"
        )
    if config["redis_url"] is not None:
        _validate_redis(config)
    if not isinstance(config["name"], str) or not config["name"]:
        raise ConfigurationError(f"name must be a non-empty str, got {config['name']!r}")
    wal_max = config["wal_max_bytes"]
    if not isinstance(wal_max, int) or isinstance(wal_max, bool) or wal_max < 4096:
        raise ConfigurationError(f"wal_max_bytes must be an int >= 4096, got {wal_max!r}")
    timer: Callable[[], float] = config["timer"]
    if not callable(timer):
        raise ConfigurationError(f"timer must be callable, got {timer!r}")


def _validate_redis(config: dict[str, Any]) -> None:
    """Check the Redis tier's options (only when ``redis_url`` is set)."""
    url = config["redis_url"]
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"redis_url must be a redis://, rediss:// or unix:// URL, got {url!r}"
        )
    if not (config["secret"] or os.environ.get("CACHEPLUG_SECRET")):
        raise ConfigurationError(
            "redis_url needs a secret to sign the values and messages it shares: pass "
            "secret=... or set CACHEPLUG_SECRET (the same in every process); unsigned "
            "pickles are never loaded from Redis"
        )
    prefix = config["redis_prefix"]
    if prefix is not None and (
        not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix
    ):
        raise ConfigurationError(
            f"redis_prefix must be a non-empty str without braces, got {prefix!r}"
        )
    for option, low in (
        ("redis_socket_timeout", 0.001),
        ("redis_breaker_reset", 0.001),
        ("redis_lock_ttl", 0.01),
    ):
        value = config[option]
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= low:
            raise ConfigurationError(
                f"{option} must be a number of seconds >= {low}, got {value!r}"
            )
    threshold = config["redis_breaker_threshold"]
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ConfigurationError(f"redis_breaker_threshold must be an int >= 1, got {threshold!r}")
    for option in ("write_through", "redis_cluster"):
        if not isinstance(config[option], bool):
            raise ConfigurationError(f"{option} must be True or False, got {config[option]!r}")
