"""The ``/_cacheplug/`` dashboard and the Prometheus ``/metrics`` view, both opt-in.

Mount them with ``path("_cacheplug/", include("cacheplug.integrations.django.urls"))``
(or route :func:`dashboard_page`, :func:`dashboard_stats` and :func:`metrics_view`
yourself). Every view answers 404 until its setting turns it on:

* ``CACHEPLUG_DASHBOARD = {"ENABLED": True, "ALIAS": "default", "TOKEN": None,
  "ALLOW_LOOPBACK": True}``: the page and its JSON, for a client presenting ``TOKEN``
  (``Authorization: Bearer`` or ``?token=``; None reads ``$CACHEPLUG_DASHBOARD_TOKEN``)
  or connecting from loopback without proxy headers (see ``docs/dashboard.md``).
* ``CACHEPLUG_METRICS = {"ENABLED": True, "ALIASES": None, "TOKEN": None,
  "ALLOW_LOOPBACK": True, "REGISTRY": None}``: every CachePlugCache store (one series
  per ``LOCATION``), open to any client unless ``TOKEN`` is set; ``REGISTRY="default"``
  joins ``prometheus_client.REGISTRY`` and serves all of it.

The core does the work (:func:`cacheplug.dashboard.dashboard_handler`,
:class:`cacheplug.metrics.CachePlugCollector`); these views only translate Django's
request and response. Settings are parsed once and again after ``override_settings``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from cacheplug import CachePlug, ConfigurationError
from cacheplug.dashboard import AccessPolicy, Request, Response, dashboard_handler

__all__ = (
    "DashboardSettings",
    "MetricsSettings",
    "dashboard_page",
    "dashboard_settings",
    "dashboard_stats",
    "metrics_settings",
    "metrics_view",
)

_DASHBOARD_KEYS: Final = frozenset({"ENABLED", "ALIAS", "TOKEN", "ALLOW_LOOPBACK"})
_METRICS_KEYS: Final = frozenset({"ENABLED", "ALIASES", "TOKEN", "ALLOW_LOOPBACK", "REGISTRY"})


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """``CACHEPLUG_DASHBOARD``, checked: whether it is on, for which alias, who may look."""

    enabled: bool
    alias: str
    access: AccessPolicy | None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``CACHEPLUG_METRICS``, checked: whether it is on, which aliases, access, registry."""

    enabled: bool
    aliases: tuple[str, ...] | None
    access: AccessPolicy | None
    registry: Any


def _read(name: str, valid: frozenset[str]) -> dict[str, Any]:
    conf = getattr(settings, name, None) or {}
    if not isinstance(conf, Mapping):
        raise ImproperlyConfigured(f"{name} must be a dict like {{'ENABLED': True}}, got {conf!r}")
    unknown = sorted(str(key) for key in conf if key not in valid)
    if unknown:
        raise ImproperlyConfigured(f"unknown {name} keys {unknown}; valid: {sorted(valid)}")
    if not isinstance(conf.get("ENABLED", False), bool):
        raise ImproperlyConfigured(f"{name}['ENABLED'] must be True or False")
    return dict(conf)


def _policy(name: str, token: Any, allow_loopback: Any) -> AccessPolicy:
    try:
        return AccessPolicy(token=token, allow_loopback=bool(allow_loopback))
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc


def dashboard_settings() -> DashboardSettings:
    """Parse ``CACHEPLUG_DASHBOARD`` (cached until a setting changes).

    :raises ImproperlyConfigured: an unknown key, a token shorter than 16 characters, or
        a policy that lets nobody in (no token and ``ALLOW_LOOPBACK`` False).
    """
    with _lock:
        if _parsed.get("dashboard") is None:
            conf = _read("CACHEPLUG_DASHBOARD", _DASHBOARD_KEYS)
            enabled = conf.get("ENABLED", False)
            access = (
                _policy("CACHEPLUG_DASHBOARD", conf.get("TOKEN"), conf.get("ALLOW_LOOPBACK", True))
                if enabled
                else None
            )
            _parsed["dashboard"] = DashboardSettings(
                enabled, str(conf.get("ALIAS", "default")), access
            )
        return _parsed["dashboard"]


def metrics_settings() -> MetricsSettings:
    """Parse ``CACHEPLUG_METRICS`` (cached until a setting changes).

    :raises ImproperlyConfigured: an unknown key, a bad token, ``ALIASES`` that is not a
        list of names, or a ``REGISTRY`` other than None, ``"default"`` or a registry.
    """
    with _lock:
        if _parsed.get("metrics") is None:
            conf = _read("CACHEPLUG_METRICS", _METRICS_KEYS)
            enabled = conf.get("ENABLED", False)
            token = conf.get("TOKEN")
            # No token: open, as scrapers usually reach /metrics over a private network.
            access = (
                _policy("CACHEPLUG_METRICS", token, conf.get("ALLOW_LOOPBACK", True))
                if enabled and token is not None
                else None
            )
            aliases = conf.get("ALIASES")
            if aliases is not None:
                if isinstance(aliases, str) or not all(isinstance(a, str) for a in aliases):
                    raise ImproperlyConfigured(
                        f"CACHEPLUG_METRICS['ALIASES'] must be a list of CACHES aliases, "
                        f"got {aliases!r}"
                    )
                aliases = tuple(aliases)
            registry = conf.get("REGISTRY")
            if registry == "default":
                try:
                    import prometheus_client
                except ImportError as exc:
                    raise ImportError("pip install 'cacheplug[prometheus]'") from exc
                registry = prometheus_client.REGISTRY
            elif registry is not None and not hasattr(registry, "register"):
                raise ImproperlyConfigured(
                    "CACHEPLUG_METRICS['REGISTRY'] must be None (a private registry), 'default' "
                    f"(prometheus_client.REGISTRY) or a CollectorRegistry, got {registry!r}"
                )
            _parsed["metrics"] = MetricsSettings(enabled, aliases, access, registry)
        return _parsed["metrics"]


_lock = threading.RLock()
_parsed: dict[str, Any] = {}
#: (registry, plugs) -> (registry, collector) of the last registration, so a scrape
#: registers nothing and a replaced plug swaps the collector instead of clashing.
_registered: dict[str, Any] = {}


def _reset(*, setting: str, **kwargs: Any) -> None:
    """Forget parsed settings, and the collector on a shared registry, when they change."""
    if setting in ("CACHEPLUG_DASHBOARD", "CACHEPLUG_METRICS", "CACHES"):
        with _lock:
            _parsed.clear()
            current = _registered.pop("current", None)
            if current is not None and current[0] is not None:
                current[0].unregister(current[3])


setting_changed.connect(_reset)


def _plug(alias: str) -> CachePlug:
    from .backend import CachePlugCache

    if alias not in settings.CACHES:
        raise ImproperlyConfigured(f"no CACHES alias {alias!r} for the cacheplug dashboard")
    backend = caches[alias]
    if not isinstance(backend, CachePlugCache):
        raise ImproperlyConfigured(
            f"the cacheplug dashboard needs CACHES[{alias!r}] to be "
            "cacheplug.integrations.django.CachePlugCache; set CACHEPLUG_DASHBOARD['ALIAS']"
        )
    return backend.plug


def _core_request(request: HttpRequest, path: str) -> Request:
    meta = request.META
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in meta.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    }
    query_string = meta.get("QUERY_STRING", "")
    return Request(
        method=request.method or "GET",
        path=path,
        full_path=request.path,
        query_string=query_string,
        query=parse_qs(query_string),
        headers=headers,
        client_host=meta.get("REMOTE_ADDR"),
    )


def _django_response(response: Response, method: str | None) -> HttpResponse:
    body = b"" if method == "HEAD" else response.body
    django_response = HttpResponse(body, status=response.status)
    for name, value in response.header_list():
        django_response[name] = value
    return django_response


def _serve_dashboard(request: HttpRequest, path: str) -> HttpResponse:
    conf = dashboard_settings()
    if not conf.enabled:
        raise Http404("the cacheplug dashboard is off (CACHEPLUG_DASHBOARD['ENABLED'])")
    handler = dashboard_handler(_plug(conf.alias), access=conf.access, standalone=True)
    response = handler(_core_request(request, path))
    if response is None:  # pragma: no cover - the URLconf only routes the handler's paths
        raise Http404()
    return _django_response(response, request.method)


@csrf_exempt  # nothing changes state; other methods get the dashboard's own 405
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """The dashboard page; 404 unless ``CACHEPLUG_DASHBOARD['ENABLED']``, 401/403 per access."""
    return _serve_dashboard(request, "/")


@csrf_exempt
def dashboard_stats(request: HttpRequest) -> HttpResponse:
    """The dashboard's JSON document (``build_payload``); same gate as :func:`dashboard_page`."""
    return _serve_dashboard(request, "/api/stats")


def _metrics_plugs(conf: MetricsSettings) -> tuple[CachePlug, ...]:
    from .lifecycle import cacheplug_aliases

    aliases = conf.aliases if conf.aliases is not None else tuple(cacheplug_aliases())
    plugs: dict[int, CachePlug] = {}
    for alias in aliases:
        plug = _plug(alias)
        plugs.setdefault(id(plug), plug)  # aliases sharing a LOCATION share one plug
    if not plugs:
        raise ImproperlyConfigured("CACHEPLUG_METRICS: no CachePlugCache alias in CACHES")
    return tuple(plugs.values())


def _registry(conf: MetricsSettings) -> Any:
    from cacheplug.metrics import CachePlugCollector

    plugs = _metrics_plugs(conf)
    with _lock:
        current = _registered.get("current")
        if current is not None and current[0] is conf.registry and current[1] == plugs:
            return current[2]
        if current is not None and current[0] is not None:
            current[0].unregister(current[3])  # a shared registry: drop the old collector
        try:
            collector = CachePlugCollector(*plugs)  # ImportError naming the extra if needed
            if conf.registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry()
            else:
                registry = conf.registry
            registry.register(collector)
        except ValueError as exc:  # ConfigurationError, or a duplicate registration
            _registered.pop("current", None)
            raise ImproperlyConfigured(f"CACHEPLUG_METRICS: {exc}") from exc
        _registered["current"] = (conf.registry, plugs, registry, collector)
        return registry


@csrf_exempt
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every CachePlugCache store's counters in the Prometheus exposition format.

    404 unless ``CACHEPLUG_METRICS['ENABLED']``; OpenMetrics when the scraper's
    ``Accept`` asks for it. Needs prometheus-client (``pip install 'cacheplug[prometheus]'``).
    """
    conf = metrics_settings()
    if not conf.enabled:
        raise Http404("cacheplug metrics are off (CACHEPLUG_METRICS['ENABLED'])")
    core_request = _core_request(request, request.path)
    if conf.access is not None:
        decision = conf.access.check(
            client_host=core_request.client_host,
            headers=core_request.headers,
            query_token=(core_request.query.get("token") or [None])[0],
        )
        if not decision.allowed:
            extra = [("www-authenticate", "Bearer")] if decision.status == 401 else []
            message = f"cacheplug: {decision.reason}\n".encode()
            return _django_response(Response(decision.status, message, headers=extra), "GET")
    if request.method not in ("GET", "HEAD"):
        response = Response(
            405, b"cacheplug: only GET and HEAD\n", headers=[("allow", "GET, HEAD")]
        )
        return _django_response(response, "GET")
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(core_request.headers.get("accept", ""))
    body = encoder(_registry(conf))
    return _django_response(Response(200, body, content_type), request.method)
