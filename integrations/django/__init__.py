"""Django adapter: a ``CACHES`` backend, request-context and page-cache middleware.

Add ``"cacheplug.integrations.django"`` to ``INSTALLED_APPS`` (its app config loads saved
state and starts the worker once per process, and saves at exit), then use:

* ``"BACKEND": "cacheplug.integrations.django.CachePlugCache"`` in ``CACHES``;
* ``"cacheplug.integrations.django.RequestContextMiddleware"`` in ``MIDDLEWARE``;
* ``"cacheplug.integrations.django.CacheMiddleware"`` (first in ``MIDDLEWARE``) or the
  ``@cache_response`` view decorator for a page cache that never leaks ``Set-Cookie``;
* ``path("_cacheplug/", include("cacheplug.integrations.django.urls"))`` for the
  dashboard and ``/metrics``, each off until ``CACHEPLUG_DASHBOARD`` /
  ``CACHEPLUG_METRICS`` enables it (views in :mod:`.views`).

See ``docs/django.md``.
"""

from .backend import CachePlugCache
from .lifecycle import close_all, start_all
from .middleware import RequestContextMiddleware
from .page_cache import CacheMiddleware, cache_response

__all__ = (
    "CacheMiddleware",
    "CachePlugCache",
    "RequestContextMiddleware",
    "cache_response",
    "close_all",
    "start_all",
)
