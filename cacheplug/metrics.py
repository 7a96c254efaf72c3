"""Prometheus metrics for cacheplug, read from ``plug.stats()`` at scrape time.

Nothing is counted twice: the cache, the worker and the state store already keep their
counters, and :class:`CachePlugCollector` turns a snapshot of them into metric families
when Prometheus scrapes, so the request path pays nothing for metrics.

prometheus-client is imported by the functions that need it, never at import time;
without it they raise ``ImportError`` naming the extra to install.

Exported families (label ``cache`` = ``CachePlug(name=...)``):

=========================================  =======  =========================================
``cacheplug_hits_total``                   counter  lookups that found a live entry
``cacheplug_misses_total``                 counter  lookups that found nothing live
``cacheplug_sets_total``                   counter  entries stored
``cacheplug_deletes_total``                counter  entries deleted
``cacheplug_evictions_total``              counter  entries evicted to respect maxsize
``cacheplug_expirations_total``            counter  expired entries removed
``cacheplug_worker_inline_runs_total``     counter  tasks run in the caller (queue full)
``cacheplug_worker_failed_total``          counter  background tasks that raised
``cacheplug_receiver_errors_total``        counter  event receivers that raised
``cacheplug_entries``                      gauge    entries stored now
``cacheplug_max_entries``                  gauge    the configured maxsize
``cacheplug_queue_depth``                  gauge    tasks waiting for the worker
``cacheplug_queue_high_water``             gauge    deepest queue seen
``cacheplug_wal_lag_records``              gauge    changes not yet durable (0 without state_dir)
``cacheplug_wal_bytes``                    gauge    write-ahead log size (with state_dir)
``cacheplug_last_snapshot_timestamp_seconds`` gauge Unix time of the last snapshot written
``cacheplug_tier_up``                      gauge    1 when the Redis tier is reachable, else 0
=========================================  =======  =========================================

``cacheplug_tier_up`` is present only for a plug with a Redis tier, and the snapshot
timestamp only once a snapshot was written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from cacheplug.dashboard._http import Request, Response, guarded, make_asgi_app, make_wsgi_app
from cacheplug.dashboard.access import AccessPolicy
from cacheplug.dashboard.payload import tier_status, wal_lag_records
from cacheplug.errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ("CachePlugCollector", "metrics_asgi_app", "metrics_wsgi_app", "register")

_INSTALL_HINT: Final = (
    "cacheplug.metrics needs prometheus-client: pip install 'cacheplug[prometheus]'"
)

#: (name without _total, help, reader of RuntimeStats)
_COUNTERS: Final[tuple[tuple[str, str, Callable[[Any], int]], ...]] = (
    ("cacheplug_hits", "Cache lookups that found a live entry.", lambda s: s.cache.hits),
    ("cacheplug_misses", "Cache lookups that found no live entry.", lambda s: s.cache.misses),
    ("cacheplug_sets", "Entries stored.", lambda s: s.cache.sets),
    ("cacheplug_deletes", "Entries deleted.", lambda s: s.cache.deletes),
    ("cacheplug_evictions", "Entries evicted to respect maxsize.", lambda s: s.cache.evictions),
    ("cacheplug_expirations", "Expired entries removed.", lambda s: s.cache.expirations),
    (
        "cacheplug_worker_inline_runs",
        "Background tasks run in the caller's thread because the queue was full or closed.",
        lambda s: s.worker.inline_runs,
    ),
    ("cacheplug_worker_failed", "Background tasks that raised.", lambda s: s.worker.failed),
    ("cacheplug_receiver_errors", "Event receivers that raised.", lambda s: s.receiver_errors),
)

_GAUGES: Final[tuple[tuple[str, str, Callable[[Any], float]], ...]] = (
    ("cacheplug_entries", "Entries stored now.", lambda s: s.cache.size),
    (
        "cacheplug_max_entries",
        "The configured maximum number of entries.",
        lambda s: s.cache.maxsize,
    ),
    (
        "cacheplug_queue_depth",
        "Tasks waiting for the background worker.",
        lambda s: s.worker.queue_depth,
    ),
    ("cacheplug_queue_high_water", "Deepest worker queue seen.", lambda s: s.worker.high_water),
)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return prometheus_client


class CachePlugCollector:
    """A Prometheus collector that reads one or more plugs when scraped.

    :param plugs: :class:`cacheplug.CachePlug` objects with distinct names (the ``cache``
        label). Put several plugs in one collector: two collectors exporting the same
        families cannot share a registry.
    :raises ConfigurationError: for no plugs, or two plugs with one name.
    :raises ImportError: without prometheus-client.

    Thread-safe: each scrape reads fresh snapshots.
    """

    def __init__(self, *plugs: Any) -> None:
        _prometheus()
        if not plugs:
            raise ConfigurationError("CachePlugCollector needs at least one CachePlug")
        names = [getattr(plug, "name", None) for plug in plugs]
        if len(set(names)) != len(names):
            raise ConfigurationError(
                f"every plug needs its own name for the 'cache' label, got {names!r}; "
                "pass CachePlug(name=...)"
            )
        self.plugs: tuple[Any, ...] = plugs

    def describe(self) -> list[Metric]:
        """The families this collector yields, without samples (for duplicate checks)."""
        return list(self._families(with_samples=False))

    def collect(self) -> Iterator[Metric]:
        """Read every plug's stats and yield the metric families."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["cache"]
        snapshots = [(plug, plug.stats()) for plug in self.plugs] if with_samples else []
        for name, help_text, read in _COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=labels)
            for plug, stats in snapshots:
                family.add_metric([plug.name], read(stats))
            yield family
        for name, help_text, read in _GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for plug, stats in snapshots:
                family.add_metric([plug.name], read(stats))
            yield family
        lag = GaugeMetricFamily(
            "cacheplug_wal_lag_records",
            "Changes made in memory and not yet durable on disk (0 without persistence).",
            labels=labels,
        )
        wal_bytes = GaugeMetricFamily(
            "cacheplug_wal_bytes", "Size of the write-ahead log in bytes.", labels=labels
        )
        snapshot_at = GaugeMetricFamily(
            "cacheplug_last_snapshot_timestamp_seconds",
            "Unix time of the last snapshot this process wrote.",
            labels=labels,
        )
        tier_up = GaugeMetricFamily(
            "cacheplug_tier_up",
            "1 when the Redis tier is reachable, 0 when it is not.",
            labels=labels,
        )
        for plug, stats in snapshots:
            persistence = stats.persistence
            lag.add_metric([plug.name], wal_lag_records(plug, persistence))
            if persistence is not None:
                wal_bytes.add_metric([plug.name], persistence.wal_bytes)
                if persistence.last_snapshot_at is not None:
                    snapshot_at.add_metric([plug.name], persistence.last_snapshot_at)
            state = tier_status(plug)["state"]
            if state in ("up", "down"):
                tier_up.add_metric([plug.name], 1.0 if state == "up" else 0.0)
        yield from (lag, wal_bytes, snapshot_at, tier_up)


def register(*plugs: Any, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Register a :class:`CachePlugCollector` for ``plugs`` and return the registry.

    :param registry: where to register; default a new ``CollectorRegistry`` per call
        (isolated, so tests and several apps never collide). Pass
        ``prometheus_client.REGISTRY`` to join the process-wide default registry that
        ``prometheus_client.start_http_server`` and most exporters serve.
    :raises ConfigurationError: when the registry already holds cacheplug metrics.
    """
    prometheus = _prometheus()
    if registry is None:
        registry = prometheus.CollectorRegistry()
    try:
        registry.register(CachePlugCollector(*plugs))
    except ValueError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(
            f"this registry already has cacheplug metrics ({exc}); register every plug in "
            "one call, register(plug_a, plug_b, registry=...)"
        ) from exc
    return registry


def _metrics_handler(
    registry: CollectorRegistry, path: str | None
) -> Callable[[Request], Response | None]:
    from prometheus_client.exposition import choose_encoder

    def handle(request: Request) -> Response | None:
        if path is not None and request.path != path:
            return None
        # OpenMetrics when the scraper asks for it, the classic text format otherwise.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encoder(registry), content_type)

    return handle


def _open(handler: Callable[[Request], Response | None]) -> Callable[[Request], Response | None]:
    def run(request: Request) -> Response | None:
        response = handler(request)
        if response is not None and request.method not in ("GET", "HEAD"):
            return Response(
                405, b"cacheplug: only GET and HEAD\n", headers=[("allow", "GET, HEAD")]
            )
        return response

    return run


def _build(plug: Any, registry: Any, app: Any, path: str, access: AccessPolicy | None) -> Any:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"path must start with '/', like '/metrics'; got {path!r}")
    registry = register(plug, registry=registry)
    handler = _metrics_handler(registry, path if app is not None else None)
    return guarded(handler, access) if access is not None else _open(handler)


def metrics_asgi_app(
    plug: Any,
    *,
    registry: CollectorRegistry | None = None,
    app: Any | None = None,
    path: str = "/metrics",
    access: AccessPolicy | None = None,
) -> Callable[..., Any]:
    """A pure ASGI app serving ``plug``'s metrics in the Prometheus exposition format.

    :param plug: the :class:`cacheplug.CachePlug` to export.
    :param registry: register the plug's collector there and serve the whole registry
        (for example ``prometheus_client.REGISTRY``); default a private registry.
    :param app: an ASGI app to wrap: only ``path`` is answered, the rest passes through.
        Without ``app`` every path is answered (mount it where you like).
    :param access: an :class:`AccessPolicy` to require; default open, as scrapers
        usually reach ``/metrics`` over a private network.
    :raises ConfigurationError: for a bad ``path`` or a registry that already holds
        cacheplug metrics.
    """
    handler = _build(plug, registry, app, path, access)
    return make_asgi_app(handler, app)


def metrics_wsgi_app(
    plug: Any,
    *,
    registry: CollectorRegistry | None = None,
    app: Callable[..., Iterable[bytes]] | None = None,
    path: str = "/metrics",
    access: AccessPolicy | None = None,
) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving ``plug``'s metrics; same parameters as :func:`metrics_asgi_app`."""
    handler = _build(plug, registry, app, path, access)
    return make_wsgi_app(handler, app)
