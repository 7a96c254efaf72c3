"""The opt-in admin routes of the middleware: the ``/_cacheplug/`` dashboard and ``/metrics``.

Both are off by default and built once, at construction, from the core's pure ASGI apps
(:func:`cacheplug.dashboard.dashboard_asgi_app`, :func:`cacheplug.metrics.metrics_asgi_app`),
so neither the dashboard nor prometheus-client is imported unless switched on. When both
are off the middleware holds ``None`` and its hit path pays one attribute test.
"""

from __future__ import annotations

from typing import Any

from cacheplug.errors import ConfigurationError

from ._types import ASGIApp, Scope

__all__ = ("AdminRoutes", "build_admin_routes")


class AdminRoutes:
    """Decides whether an HTTP scope is for the dashboard or the metrics endpoint.

    Each route app wraps the inner app, so a path under the dashboard prefix that the
    dashboard does not serve still reaches the app (as it would without the middleware).
    """

    __slots__ = ("_dashboard", "_metrics", "_metrics_path", "_prefix")

    def __init__(
        self,
        dashboard: ASGIApp | None,
        prefix: str,
        metrics: ASGIApp | None,
        metrics_path: str,
    ) -> None:
        self._dashboard = dashboard
        self._prefix = prefix
        self._metrics = metrics
        self._metrics_path = metrics_path

    def route(self, scope: Scope) -> ASGIApp | None:
        """The app that answers this scope, or None for an ordinary request."""
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):  # mounted: routes are relative to the mount
            path = path[len(root) :]
        if self._metrics is not None and path == self._metrics_path:
            return self._metrics
        if self._dashboard is not None and (
            path == self._prefix or path.startswith(self._prefix + "/")
        ):
            return self._dashboard
        return None


def build_admin_routes(
    app: ASGIApp,
    plug: Any,
    *,
    dashboard: bool,
    dashboard_token: str | None,
    dashboard_prefix: str,
    metrics: bool,
    metrics_path: str,
) -> AdminRoutes | None:
    """Build the routes the options switch on, or None when both are off.

    :raises ConfigurationError: a bad token, prefix or path (the message names it).
    :raises ImportError: ``metrics=True`` without prometheus-client installed.
    """
    for option, value in (("dashboard", dashboard), ("metrics", metrics)):
        if not isinstance(value, bool):
            raise ConfigurationError(f"CachePlugMiddleware({option}={value!r}): give True or False")
    if not dashboard and not metrics:
        if dashboard_token is not None:
            raise ConfigurationError(
                "CachePlugMiddleware(dashboard_token=...) has no effect without dashboard=True"
            )
        return None
    dashboard_app = None
    if dashboard:
        from cacheplug.dashboard import AccessPolicy, dashboard_asgi_app

        # token=None reads $CACHEPLUG_DASHBOARD_TOKEN; with neither, loopback clients only.
        access = AccessPolicy(token=dashboard_token)
        dashboard_app = dashboard_asgi_app(plug, app=app, access=access, prefix=dashboard_prefix)
    metrics_app = None
    if metrics:
        from cacheplug.metrics import metrics_asgi_app

        metrics_app = metrics_asgi_app(plug, app=app, path=metrics_path)
    return AdminRoutes(dashboard_app, dashboard_prefix, metrics_app, metrics_path)
