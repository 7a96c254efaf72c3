"""The exceptions cacheplug raises.

Every error derives from :class:`CachePlugError` and also from the built-in exception it
refines, so ``except ValueError`` keeps working for callers who do not know cacheplug.
"""

from __future__ import annotations

__all__ = (
    "CachePlugError",
    "ConfigurationError",
    "InvalidKeyError",
    "UnhashableKeyError",
)


class CachePlugError(Exception):
    """Base class of every exception raised by cacheplug."""


class ConfigurationError(CachePlugError, ValueError):
    """An option has a value outside its valid range; the message names both."""


class InvalidKeyError(CachePlugError, ValueError):
    """A key was rejected by key validation; the message quotes the key."""


class UnhashableKeyError(CachePlugError, TypeError):
    """A key cannot be hashed, so it cannot be stored; the message names its type."""

    def __init__(self, key: object) -> None:
        super().__init__(
            f"cache keys must be hashable, got {type(key).__name__!s} {key!r:.80}; "
            "use a str, int, bytes or tuple of those"
        )
