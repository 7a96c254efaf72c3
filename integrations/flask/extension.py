"""``FlaskCachePlug``: the Flask extension, following Flask's extension guide.

One ``FlaskCachePlug`` (usually module-level) serves any number of apps. It never keeps
an app on itself: ``init_app(app)`` builds one :class:`~cacheplug.runtime.CachePlug` per
app from ``app.config["CACHEPLUG_*"]`` and stores it, with the app's HTTP policy, in
``app.extensions["cacheplug"]`` (a :class:`FlaskPlugState`); every method finds it
through ``current_app`` or an explicit ``app`` argument.

Lifecycle: configuration is checked in ``init_app`` (errors at startup). The runtime
starts (state loaded, worker started) on first use in the process: the first request,
CLI command, ``plug.cache``/``plug.runtime()`` access, or an explicit
``plug.start(app)``. Starting lazily keeps threads and the state directory's writer lock
out of processes that never serve: the Werkzeug reloader's parent process and a
``gunicorn --preload`` master. It is saved and stopped at process exit (``atexit``), or
by ``plug.close(app)``.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

from flask import Flask, current_app

from cacheplug.context import RequestContext, request_context
from cacheplug.errors import ConfigurationError
from cacheplug.http import HttpCachePolicy
from cacheplug.runtime import DEFAULTS, CachePlug, RuntimeStats

from ._wsgi import (
    _EARLY_INDEX_MAX,
    EARLY_SLOT,
    CachePlugWSGI,
    OriginKeys,
    early_slot,
)
from .observability import OBSERVABILITY_KEYS, observability_from_config

if TYPE_CHECKING:
    from cacheplug.cache import ShardedTTLCache

__all__ = ("CONFIG_PREFIX", "EXTENSION_KEY", "FlaskCachePlug", "FlaskPlugState")

F = TypeVar("F", bound=Callable[..., Any])

#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY: Final = "cacheplug"
#: Prefix of the config keys: ``CACHEPLUG_TTL`` sets the runtime's ``ttl``.
CONFIG_PREFIX: Final = "CACHEPLUG_"
#: Config keys the Flask adapter reads itself; every other ``CACHEPLUG_*`` key is a
#: :class:`CachePlug` option.
FLASK_KEYS: Final = ("CACHEPLUG_HTTP_POLICY", "CACHEPLUG_EARLY_HITS", *OBSERVABILITY_KEYS)
#: The HTTP policy's default freshness when ``ttl`` is None (no expiry): 2**31 s.
_NO_EXPIRY_TTL: Final = float(2**31)


@dataclass(eq=False)
class FlaskPlugState:
    """Everything cacheplug keeps for one app, in ``app.extensions["cacheplug"]``.

    :ivar extension: the :class:`FlaskCachePlug` that registered it.
    :ivar runtime: the app's :class:`CachePlug` (cache, worker, state store).
    :ivar policy: the HTTP policy ``@cached`` views use.
    :ivar early_hits: answer ``@cached`` hits before Flask dispatches (``CACHEPLUG_EARLY_HITS``).
    :ivar early_index: ``(scheme, host, script, path) -> (key, query_string)`` of views
        that may be answered early; bounded, cleared when full.
    :ivar origin: ``environ -> "scheme://host[:port]<script root>"`` (or None for an
        unusable host): the part of every ``@cached`` key that keeps hosts apart.
    """

    extension: FlaskCachePlug
    runtime: CachePlug
    policy: HttpCachePolicy
    early_hits: bool = True
    early_index: dict[tuple[Any, ...], tuple[str, bool]] = field(default_factory=dict)
    origin: OriginKeys = field(init=False, repr=False)
    started: bool = False
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _policies: dict[float | None, HttpCachePolicy] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.origin = OriginKeys(self.policy)

    def start(self) -> CachePlug:
        """Start the runtime once (load state, start the worker) and register the atexit
        save. A no-op after :meth:`close`: the app keeps serving from memory."""
        with self._lock:
            if not self.started and not self.closed:
                self.runtime.start()
                atexit.register(self.runtime.close)
                self.started = True
        return self.runtime

    def close(self) -> None:
        """Drain, save and stop the runtime; unregister the atexit hook. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.started = True  # nothing starts it again
            atexit.unregister(self.runtime.close)
        self.runtime.close()

    def policy_for(self, timeout: float | None) -> HttpCachePolicy:
        """The app's policy with ``default_ttl`` set to a view's ``timeout`` (memoized)."""
        policy = self._policies.get(timeout)
        if policy is None:
            policy = self.policy if timeout is None else replace(self.policy, default_ttl=timeout)
            self._policies[timeout] = policy
        return policy

    def remember_early(self, environ: dict[str, Any], key: str, with_query: bool) -> None:
        """Record that this request's URL is answered by a view cached under ``key``.

        Only when the view saw the scheme, host, script root and path the WSGI layer saw:
        a middleware inside ``app.wsgi_app`` that rewrites them (``ProxyFix`` applied
        before ``init_app``) makes the early slot say nothing about the key, so such
        requests are answered in the view.
        """
        if not self.early_hits:
            return
        slot = environ.get(EARLY_SLOT)
        if slot is None or slot != early_slot(environ):
            return
        index = self.early_index
        if len(index) >= _EARLY_INDEX_MAX:
            index.clear()
        index[slot] = (key, with_query)


class FlaskCachePlug:
    """The cacheplug Flask extension: per-app runtime, request scope, decorators, CLI.

    ::

        plug = FlaskCachePlug()          # module level, no app
        def create_app():
            app = Flask(__name__)
            app.config.from_mapping(CACHEPLUG_TTL=300, CACHEPLUG_STATE_DIR="/var/lib/app")
            plug.init_app(app)           # app.extensions["cacheplug"]
            return app

    :param app: an app to initialise now (same as calling :meth:`init_app`).
    :param http_policy: the default :class:`~cacheplug.http.HttpCachePolicy` for
        ``@cached`` views (``CACHEPLUG_HTTP_POLICY`` overrides it per app).
    :param options: defaults for :class:`~cacheplug.runtime.CachePlug` options
        (``maxsize``, ``ttl``, ``state_dir``...); ``app.config["CACHEPLUG_<OPTION>"]``
        overrides each one per app.
    :raises ConfigurationError: an option name is unknown.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        http_policy: HttpCachePolicy | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ConfigurationError(
                f"unknown FlaskCachePlug option(s) {unknown}; valid options: {sorted(DEFAULTS)}"
            )
        if http_policy is not None and not isinstance(http_policy, HttpCachePolicy):
            raise ConfigurationError(
                f"http_policy must be a cacheplug.http.HttpCachePolicy, got {http_policy!r}"
            )
        self._options = options
        self._http_policy = http_policy
        if app is not None:
            self.init_app(app)

    # -- setup --------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Check the app's ``CACHEPLUG_*`` config, build its runtime and register it.

        Registers ``app.extensions["cacheplug"]``, wraps ``app.wsgi_app`` (request
        scope, early hits, response stores, and the opt-in dashboard and ``/metrics``
        routes of ``CACHEPLUG_DASHBOARD`` / ``CACHEPLUG_METRICS``) and adds the
        ``flask cacheplug`` commands.
        The runtime starts on first use (see the module docstring), or call
        :meth:`start`. The state secret defaults to the app's ``SECRET_KEY``.

        :raises ConfigurationError: a ``CACHEPLUG_*`` key is unknown or its value is
            invalid; the message names the key.
        :raises RuntimeError: cacheplug is already registered on this app.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"cacheplug is already initialised on app {app.name!r}; call init_app once per app"
            )
        observability = observability_from_config(app.config)
        runtime = self._build_runtime(app)
        policy = app.config.get("CACHEPLUG_HTTP_POLICY", self._http_policy)
        if policy is None:
            ttl = runtime.config["ttl"]
            policy = HttpCachePolicy(default_ttl=_NO_EXPIRY_TTL if ttl is None else ttl)
        elif not isinstance(policy, HttpCachePolicy):
            raise ConfigurationError(
                f"CACHEPLUG_HTTP_POLICY must be a cacheplug.http.HttpCachePolicy, got {policy!r}"
            )
        early = app.config.get("CACHEPLUG_EARLY_HITS", True)
        if not isinstance(early, bool):
            raise ConfigurationError(f"CACHEPLUG_EARLY_HITS must be True or False, got {early!r}")
        state = FlaskPlugState(self, runtime, policy, early_hits=early)
        app.extensions[EXTENSION_KEY] = state
        wsgi = CachePlugWSGI(app.wsgi_app, state)
        if observability.prefixes:
            wsgi.mount(observability.prefixes, observability.wrap(runtime, wsgi))
        app.wsgi_app = wsgi  # type: ignore[method-assign]
        from .cli import cacheplug_cli

        app.cli.add_command(cacheplug_cli)

    def _build_runtime(self, app: Flask) -> CachePlug:
        """``CachePlug.from_config`` over the constructor options overlaid by app.config."""
        merged: dict[str, Any] = {CONFIG_PREFIX + k.upper(): v for k, v in self._options.items()}
        for key, value in app.config.items():
            if key.upper().startswith(CONFIG_PREFIX) and key.upper() not in FLASK_KEYS:
                merged[key.upper()] = value
        merged.setdefault("CACHEPLUG_NAME", app.name)
        if not merged.get("CACHEPLUG_SECRET") and app.config.get("SECRET_KEY"):
            merged["CACHEPLUG_SECRET"] = app.config["SECRET_KEY"]
        try:
            runtime = CachePlug.from_config(merged, prefix=CONFIG_PREFIX)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"invalid cacheplug configuration for Flask app {app.name!r}: {exc}. Set "
                f"options as app.config['CACHEPLUG_<OPTION>']; the Flask adapter also "
                f"reads {', '.join(FLASK_KEYS)}"
            ) from exc
        if runtime.config["state_dir"] is not None:
            from cacheplug.persistence import MissingSecretError, resolve_secret

            try:
                resolve_secret(runtime.config["secret"])
            except MissingSecretError as exc:
                raise ConfigurationError(
                    f"Flask app {app.name!r} sets CACHEPLUG_STATE_DIR but no secret to sign "
                    "the saved state: set SECRET_KEY, CACHEPLUG_SECRET or $CACHEPLUG_SECRET"
                ) from exc
        return runtime

    # -- per-app access -------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> FlaskPlugState:
        """The :class:`FlaskPlugState` of ``app`` (default: ``current_app``); not started.

        :raises RuntimeError: no app context and no ``app``, or ``init_app`` was not
            called on that app.
        """
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError(
                f"cacheplug is not initialised on Flask app {app.name!r}: call "
                "plug.init_app(app) in your app factory"
            ) from None

    def start(self, app: Flask | None = None) -> CachePlug:
        """Start ``app``'s runtime now (load state, start the worker) instead of on first
        use; idempotent. Errors loading the state surface here."""
        return self.state(app).start()

    def runtime(self, app: Flask | None = None) -> CachePlug:
        """The started :class:`CachePlug` of ``app`` (default: ``current_app``)."""
        state = self.state(app)
        return state.runtime if state.started else state.start()

    @property
    def cache(self) -> ShardedTTLCache:
        """The current app's cache (a :class:`~cacheplug.cache.ShardedTTLCache`)."""
        return self.runtime().cache

    @property
    def context(self) -> RequestContext:
        """The request-context store every request's scope is opened on."""
        return request_context

    def stats(self, app: Flask | None = None) -> RuntimeStats:
        """The counters of ``app``'s cache, worker, bus and state store."""
        return self.runtime(app).stats()

    def invalidate_tags(self, *tags: Hashable, app: Flask | None = None) -> None:
        """Hide every entry (views, memoized results) carrying one of ``tags`` now."""
        self.runtime(app).invalidate_tags(*tags)

    def close(self, app: Flask | None = None) -> None:
        """Drain, save and stop ``app``'s runtime now; no cacheplug thread of it remains.

        Idempotent. Use it in test teardown; in production the atexit hook does it.
        After it the app still answers from its in-memory cache but saves nothing.
        """
        self.state(app).close()

    # -- decorators -------------------------------------------------------------------------

    def cached(
        self,
        timeout: float | None = None,
        key_prefix: str | Callable[[], str] = "view/%s",
        query_string: bool = False,
        unless: Callable[[], bool] | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] = (),
    ) -> Callable[[F], F]:
        """Cache a view's whole response under the shared HTTP policy (RFC 9111).

        See :func:`cacheplug.integrations.flask.decorators.cached_view` for the rules.
        """
        from .decorators import cached_view

        return cached_view(self, timeout, key_prefix, query_string, unless, tags)

    def memoize(
        self, timeout: float | None = None, tags: Iterable[str] = (), **options: Any
    ) -> Callable[[F], F]:
        """Cache a function's result per arguments in the current app's cache.

        See :func:`cacheplug.integrations.flask.decorators.memoize` for the rules.
        """
        from .decorators import memoize

        return memoize(self, timeout, tags, options)

    def delete_memoized(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Forget ``fn``'s result for these arguments, or every result without arguments.

        :raises TypeError: ``fn`` was not decorated with :meth:`memoize`.
        """
        from .decorators import delete_memoized

        delete_memoized(self, fn, args, kwargs)

    def __repr__(self) -> str:
        return f"<FlaskCachePlug options={sorted(self._options)}>"
