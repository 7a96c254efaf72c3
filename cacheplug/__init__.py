"""cacheplug: fast, coherent, safe in-process caching and request state for web apps.

The core imports only the standard library, blinker and cachetools; the adapters for
Django, Flask and ASGI live in ``cacheplug.integrations``.
"""

from cacheplug.cache import NO_EXPIRY, Entry, ShardedTTLCache
from cacheplug.errors import (
    CachePlugError,
    ConfigurationError,
    InvalidKeyError,
    UnhashableKeyError,
)
from cacheplug.stats import CacheStats

__version__ = "0.1.0"

__all__ = (
    "NO_EXPIRY",
    "CachePlugError",
    "CacheStats",
    "ConfigurationError",
    "Entry",
    "InvalidKeyError",
    "ShardedTTLCache",
    "UnhashableKeyError",
    "__version__",
)
