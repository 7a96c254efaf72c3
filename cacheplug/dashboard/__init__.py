"""The cacheplug dashboard: a self-contained page and a JSON endpoint at ``/_cacheplug/``.

Nothing here is mounted unless an adapter (or you) asks for it. The apps are pure ASGI
and WSGI, import no web framework, and guard every route with an :class:`AccessPolicy`
(a bearer token, or a loopback client). ``metrics_asgi_app`` and ``metrics_wsgi_app``
(Prometheus ``/metrics``) live in :mod:`cacheplug.metrics` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

from cacheplug.dashboard._http import Request, Response
from cacheplug.dashboard.access import AccessDecision, AccessPolicy, is_loopback
from cacheplug.dashboard.app import (
    DEFAULT_PREFIX,
    dashboard_asgi_app,
    dashboard_handler,
    dashboard_wsgi_app,
)
from cacheplug.dashboard.payload import build_payload, key_prefix, tier_status, wal_lag_records

__all__ = (
    "DEFAULT_PREFIX",
    "AccessDecision",
    "AccessPolicy",
    "Request",
    "Response",
    "build_payload",
    "dashboard_asgi_app",
    "dashboard_handler",
    "dashboard_wsgi_app",
    "is_loopback",
    "key_prefix",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "tier_status",
    "wal_lag_records",
)


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the dashboard never imports cacheplug.metrics (and the
    # metrics module may import the dashboard's plumbing without a cycle).
    if name in ("metrics_asgi_app", "metrics_wsgi_app"):
        from cacheplug import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
