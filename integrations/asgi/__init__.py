"""ASGI adapter: pure ASGI middleware, lifespan hooks and FastAPI helpers.

Importing it loads no web framework; it works with Starlette, FastAPI and any ASGI 3 app.
"""

from __future__ import annotations

from .endpoints import (
    CACHE_TAGS,
    CACHE_TTL,
    add_cache_tags,
    cache_endpoint,
    request_context_dep,
)
from .lifespan import STATE_KEY, cacheplug_lifespan, run_lifespan
from .log import RequestIdFilter
from .middleware import CachePlugMiddleware

__all__ = (
    "CACHE_TAGS",
    "CACHE_TTL",
    "STATE_KEY",
    "CachePlugMiddleware",
    "RequestIdFilter",
    "add_cache_tags",
    "cache_endpoint",
    "cacheplug_lifespan",
    "request_context_dep",
    "run_lifespan",
)
