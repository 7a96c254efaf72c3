"""Opt-in dashboard (``/_cacheplug/``) and Prometheus ``/metrics`` for a Flask app.

Both are off by default. ``init_app`` reads three config keys, checks them (errors at
startup) and, when one is on, builds the framework-free WSGI apps of
:mod:`cacheplug.dashboard` and :mod:`cacheplug.metrics` for the app's runtime:

* ``CACHEPLUG_DASHBOARD`` (bool): serve the dashboard under ``/_cacheplug``;
* ``CACHEPLUG_DASHBOARD_TOKEN`` (str of 16+ characters, or None): the bearer token it
  asks for; None falls back to ``$CACHEPLUG_DASHBOARD_TOKEN``, and with neither only
  loopback clients get in (see ``docs/dashboard.md``);
* ``CACHEPLUG_METRICS`` (bool): serve ``/metrics`` (open, like most scrape targets).

The WSGI layer sends only paths under these prefixes to them (one ``str.startswith``
per request), so every other request pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from cacheplug.dashboard import DEFAULT_PREFIX, AccessPolicy, dashboard_wsgi_app
from cacheplug.errors import ConfigurationError
from cacheplug.runtime import CachePlug

__all__ = ("METRICS_PATH", "OBSERVABILITY_KEYS", "Observability", "observability_from_config")

#: Where ``CACHEPLUG_METRICS`` serves the Prometheus exposition.
METRICS_PATH: Final = "/metrics"
#: The config keys this module reads (the runtime does not get them).
OBSERVABILITY_KEYS: Final = (
    "CACHEPLUG_DASHBOARD",
    "CACHEPLUG_DASHBOARD_TOKEN",
    "CACHEPLUG_METRICS",
)

WSGIApp = Callable[..., Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Observability:
    """What ``init_app`` decided: which routes to serve, and with what access policy.

    :ivar dashboard: the dashboard's access policy, or None when it is off.
    :ivar metrics: serve ``/metrics``.
    """

    dashboard: AccessPolicy | None = None
    metrics: bool = False

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The path prefixes the WSGI layer hands to :meth:`wrap`'s app."""
        return (
            *((DEFAULT_PREFIX,) if self.dashboard is not None else ()),
            *((METRICS_PATH,) if self.metrics else ()),
        )

    def wrap(self, runtime: CachePlug, app: WSGIApp) -> WSGIApp:
        """``app`` behind the enabled routes; paths they do not claim reach ``app``."""
        if self.metrics:
            from cacheplug.metrics import metrics_wsgi_app

            app = metrics_wsgi_app(runtime, app=app, path=METRICS_PATH)
        if self.dashboard is not None:
            app = dashboard_wsgi_app(runtime, app=app, access=self.dashboard)
        return app


def _flag(config: Any, key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, got {value!r}")
    return value


def observability_from_config(config: Any) -> Observability:
    """Read and check ``CACHEPLUG_DASHBOARD*`` and ``CACHEPLUG_METRICS`` from ``config``.

    :raises ConfigurationError: a flag is not a bool, the token is not a str of at least
        16 characters, or ``CACHEPLUG_METRICS`` is on without prometheus-client.
    """
    access = None
    if _flag(config, "CACHEPLUG_DASHBOARD"):
        token = config.get("CACHEPLUG_DASHBOARD_TOKEN")
        if token is not None and not isinstance(token, str):
            raise ConfigurationError(
                f"CACHEPLUG_DASHBOARD_TOKEN must be a str or None, got {type(token).__name__}"
            )
        try:
            access = AccessPolicy(token=token or None)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"CACHEPLUG_DASHBOARD_TOKEN (or $CACHEPLUG_DASHBOARD_TOKEN): {exc}"
            ) from exc
    metrics = _flag(config, "CACHEPLUG_METRICS")
    if metrics:
        try:
            import prometheus_client  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "CACHEPLUG_METRICS=True needs prometheus-client: pip install "
                "'cacheplug[prometheus]'"
            ) from exc
    return Observability(access, metrics)
