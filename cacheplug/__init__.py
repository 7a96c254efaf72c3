"""cacheplug: fast, coherent, safe in-process caching and request state for web apps.

The core imports only the standard library, blinker and cachetools; the adapters for
Django, Flask and ASGI live in ``cacheplug.integrations``.
"""

from cacheplug import signals
from cacheplug.bus import EventBus
from cacheplug.cache import NO_EXPIRY, Entry, ShardedTTLCache
from cacheplug.context import NoActiveScopeError, RequestContext, request_cached, request_context
from cacheplug.errors import (
    CachePlugError,
    ConfigurationError,
    InvalidKeyError,
    UnhashableKeyError,
)
from cacheplug.runtime import CachePlug, RuntimeStats
from cacheplug.stats import CacheStats
from cacheplug.worker import DeferredWorker, WorkerStats

__version__ = "0.1.0"

__all__ = (
    "NO_EXPIRY",
    "CachePlug",
    "CachePlugError",
    "CacheStats",
    "ConfigurationError",
    "DeferredWorker",
    "Entry",
    "EventBus",
    "InvalidKeyError",
    "NoActiveScopeError",
    "RequestContext",
    "RuntimeStats",
    "ShardedTTLCache",
    "UnhashableKeyError",
    "WorkerStats",
    "__version__",
    "request_cached",
    "request_context",
    "signals",
)
