"""``CachePlugMiddleware``: pure ASGI request context, response caching and lifespan.

Order of work for an HTTP request:

0. With ``dashboard=True`` / ``metrics=True`` only: ``/_cacheplug/...`` and ``/metrics``
   go to the core's dashboard and metrics apps (:mod:`._admin`). Off, this costs one
   attribute test.
1. Parse the request headers once (latin-1, never fails) and pick the request id.
2. If response caching covers the path: decide from method and ``Cache-Control``
   (memoized per header shape), build the primary key, one ``cache.get``. A usable
   stored variant is sent straight away, with headers encoded when it was stored plus
   ``Age`` and ``X-Cache: HIT`` (or a 304): the app is never called and no request
   context is opened, because no user code runs. A stale variant inside its RFC 5861
   ``stale-while-revalidate`` window is sent the same way (``X-Cache: STALE``) while a
   background task refreshes it (:mod:`._refresh`).
3. Otherwise open the request-context scope (request id inside) and call the app; on a
   cacheable miss its ``send`` is a :class:`~._recorder.ResponseRecorder` that stores the
   complete response after it went out. A stale variant inside its ``stale-if-error``
   window replaces the app's answer if the app raises or answers 5xx.

``websocket`` scopes get the request-context scope; ``lifespan`` scopes start and close
the plug (:func:`~.lifespan.run_lifespan`); anything else passes through.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from cacheplug.context import request_context
from cacheplug.errors import ConfigurationError
from cacheplug.http import (
    X_CACHE_STALE,
    HttpCachePolicy,
    request_headers_from_asgi,
    select_stale,
    within_stale_if_error,
    within_stale_while_revalidate,
)
from cacheplug.runtime import CachePlug

from ._admin import build_admin_routes
from ._ids import new_request_id, valid_request_id
from ._recorder import ResponseRecorder
from ._refresh import Refresher
from ._types import ASGIApp, Receive, Scope, Send
from .lifespan import STATE_KEY, attach_to_lifespan, run_lifespan

__all__ = ("CachePlugMiddleware",)

logger = logging.getLogger("cacheplug.asgi")

_BYPASS = (b"x-cache", b"BYPASS")
_HIT = (b"x-cache", b"HIT")
_UNKNOWN = object()
#: ``Age`` header pairs for the first hour, built once: most hits are younger.
_AGES = tuple((b"age", b"%d" % age) for age in range(3600))


class CachePlugMiddleware:
    """Pure ASGI middleware: request context, HTTP response caching and lifespan hooks.

    ``app.add_middleware(CachePlugMiddleware, plug=plug, cache_responses=True)`` or
    ``CachePlugMiddleware(app, plug=plug)``. See ``docs/asgi.md``.

    :param app: the ASGI app to wrap.
    :param plug: the :class:`~cacheplug.CachePlug` whose cache stores the responses; the
        middleware starts it on ``lifespan.startup`` and closes it on shutdown.
    :param cache_responses: ``True`` caches every path, a sequence of path prefixes
        caches those paths only, ``False`` (default) caches nothing, so adding the
        middleware never changes a response by surprise.
    :param policy: the RFC 9111 rules and limits; default ``HttpCachePolicy`` with
        ``default_ttl`` from the plug's ``ttl`` (60 s when the plug's is None).
    :param request_id_header: the header read for an incoming id and echoed in every
        response; None neither reads nor echoes (ids are still generated for logs).
    :param trust_request_id: honour the incoming header's value (if short, ASCII and
        printable); False always generates a fresh id.
    :param handle_lifespan: run the plug's startup/shutdown on ``lifespan`` scopes; set
        False when ``cacheplug_lifespan`` (or your own code) runs the plug instead.
    :param key_prefix: prefix of the cache keys of stored pages, so pages never collide
        with your own keys and ``plug.delete_matching(prefix + "*")`` drops them all.
    :param dashboard: serve the dashboard at ``/_cacheplug/`` (off by default). Only
        loopback clients get in, unless a token is set (``dashboard_token`` or
        ``$CACHEPLUG_DASHBOARD_TOKEN``); see ``docs/dashboard.md``.
    :param dashboard_token: the dashboard's bearer token (at least 16 characters); None
        reads ``$CACHEPLUG_DASHBOARD_TOKEN``.
    :param metrics: serve Prometheus metrics at ``/metrics`` (off by default; open to any
        client, as scrapers expect; needs ``cacheplug[prometheus]``).
    :raises ConfigurationError: an option has the wrong type; the message names it.
    :raises ImportError: ``metrics=True`` without prometheus-client.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        plug: CachePlug,
        cache_responses: bool | Sequence[str] = False,
        policy: HttpCachePolicy | None = None,
        request_id_header: str | None = "x-request-id",
        trust_request_id: bool = True,
        handle_lifespan: bool = True,
        key_prefix: str = "http:",
        dashboard: bool = False,
        dashboard_token: str | None = None,
        metrics: bool = False,
    ) -> None:
        if not isinstance(plug, CachePlug):
            raise ConfigurationError(
                f"CachePlugMiddleware(plug={plug!r}) needs a cacheplug.CachePlug instance"
            )
        if isinstance(cache_responses, bool):
            prefixes: tuple[str, ...] = ()
        elif isinstance(cache_responses, str) or not all(
            isinstance(p, str) and p.startswith("/") for p in cache_responses
        ):
            raise ConfigurationError(
                f"CachePlugMiddleware(cache_responses={cache_responses!r}): give True, False "
                "or a list of path prefixes starting with '/', such as ['/catalog']"
            )
        else:
            prefixes = tuple(cache_responses)
        if policy is None:
            ttl = plug.config.get("ttl")
            policy = HttpCachePolicy(default_ttl=ttl if ttl else 60.0)
        elif not isinstance(policy, HttpCachePolicy):
            raise ConfigurationError(
                f"CachePlugMiddleware(policy={policy!r}) needs a cacheplug.http.HttpCachePolicy"
            )
        if request_id_header is not None and (
            not isinstance(request_id_header, str) or not request_id_header.strip()
        ):
            raise ConfigurationError(
                f"CachePlugMiddleware(request_id_header={request_id_header!r}): give a header "
                "name such as 'x-request-id', or None"
            )
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"CachePlugMiddleware(key_prefix={key_prefix!r}): give a str")
        self.app = app
        self.plug = plug
        self.cache = plug.cache
        #: No Redis tier: the local cache is the only place a stored page can be.
        self.local_only = plug.tier is None
        self.policy = policy
        self.key_prefix = key_prefix
        self.handle_lifespan = handle_lifespan
        self._cache_all = cache_responses is True
        self._prefixes = prefixes
        self._caching = self._cache_all or bool(prefixes)
        self._id_name = request_id_header.strip().lower() if request_id_header else None
        self._id_raw = self._id_name.encode("latin-1") if self._id_name else None
        self._trust_id = bool(trust_request_id) and self._id_name is not None
        self._policies: dict[float, HttpCachePolicy] = {}
        self._keys: dict[tuple[Any, ...], str | None] = {}
        self._admin = build_admin_routes(
            app,
            plug,
            dashboard=dashboard,
            dashboard_token=dashboard_token,
            dashboard_prefix="/_cacheplug",
            metrics=metrics,
            metrics_path="/metrics",
        )
        self._refresher = Refresher(self)
        attach_to_lifespan(plug, self._refresher)

    # ------------------------------------------------------------------------ dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        if self._admin is not None:
            admin = self._admin.route(scope)
            if admin is not None:
                await admin(scope, receive, send)
                return
        headers = request_headers_from_asgi(scope["headers"])
        rid = None
        if self._trust_id:
            rid = headers.get(self._id_name)  # type: ignore[arg-type]
            if rid is not None and not valid_request_id(rid):
                rid = None
        if rid is None:
            rid = new_request_id()
        extra = [(self._id_raw, rid.encode())] if self._id_raw is not None else []  # ASCII

        fallback = None
        if self._caching and (self._cache_all or scope["path"].startswith(self._prefixes)):
            method = scope["method"]
            policy = self.policy
            decision = policy.request_decision(method, headers)
            if decision.lookup or decision.store or decision.invalidate:
                key = self._key(scope, headers)
                if key is not None:
                    if decision.lookup:
                        variants = self.cache.get(key)
                        if variants is not None:
                            now = policy.clock()
                            entry = policy.select(variants, headers, decision, now)
                            if entry is not None:
                                if "if-none-match" in headers or method == "HEAD":
                                    status, out, body = entry.respond(
                                        headers, now, head=method == "HEAD", asgi=True
                                    )
                                    out.extend(extra)
                                else:  # the common hit, inlined: no extra calls or lists
                                    status = entry.status
                                    body = entry.body
                                    age = int(now - entry.stored_at)
                                    age = entry.initial_age + age if age > 0 else entry.initial_age
                                    out = [
                                        *entry.raw_headers,
                                        _AGES[age] if age < 3600 else (b"age", b"%d" % age),
                                        _HIT,
                                        *extra,
                                    ]
                                await send(
                                    {
                                        "type": "http.response.start",
                                        "status": status,
                                        "headers": out,
                                    }
                                )
                                await send({"type": "http.response.body", "body": body})
                                return
                            stale = select_stale(variants, headers, decision, now)
                            if stale is not None:
                                if within_stale_while_revalidate(stale, now):
                                    self._refresher.schedule(key, scope)
                                    await self._send_stale(stale, headers, now, method, extra, send)
                                    return
                                if within_stale_if_error(stale, now):
                                    fallback = stale
                    send = ResponseRecorder(self, key, headers, decision, send, extra, fallback)
                    extra = []
            elif method == "GET" or method == "HEAD":  # request no-store or unparsable
                extra.append(_BYPASS)
        if extra:
            send = _echo(send, extra)
        state = scope.get("state")
        if state is None:
            scope["state"] = {STATE_KEY: self.plug}
        elif STATE_KEY not in state:
            state[STATE_KEY] = self.plug
        token = request_context.enter(rid)  # scope(), without the context manager's calls
        try:
            if fallback is None:
                await self.app(scope, receive, send)
            else:
                await self._call_with_fallback(scope, receive, send)  # type: ignore[arg-type]
        finally:
            request_context.exit(token)

    async def _send_stale(
        self,
        entry: Any,
        headers: dict[str, str],
        now: float,
        method: str,
        extra: list[tuple[bytes, bytes]],
        send: Send,
    ) -> None:
        status, out, body = entry.respond(
            headers, now, head=method == "HEAD", asgi=True, x_cache=X_CACHE_STALE
        )
        out.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    async def _call_with_fallback(
        self, scope: Scope, receive: Receive, recorder: ResponseRecorder
    ) -> None:
        """Call the app; if it raises or answers 5xx, send the stale-if-error entry."""
        head = scope["method"] == "HEAD"
        try:
            await self.app(scope, receive, recorder)
        except Exception:
            if not recorder.replaceable:
                raise  # part of the app's own answer went out: fail as without cacheplug
            logger.warning(
                "cacheplug: the app failed on %s; serving the stale entry (stale-if-error)",
                scope["path"],
                exc_info=True,
            )
            await recorder.send_fallback(head)
            return
        if recorder.replaceable and recorder.held:
            await recorder.send_fallback(head)

    async def wait_for_refreshes(self) -> None:
        """Wait until the running ``stale-while-revalidate`` background refreshes end.

        They are also cancelled at lifespan shutdown, before the plug closes.
        """
        await self._refresher.wait()

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" and self.handle_lifespan:
            await run_lifespan(self.app, self.plug, scope, receive, send)
        elif kind == "websocket":
            rid = None
            if self._trust_id:
                for name, value in scope.get("headers") or ():
                    if name.lower() == self._id_raw:
                        rid = value.decode("latin-1").strip(" \t")
                        rid = rid if valid_request_id(rid) else None
                        break
            with request_context.scope(request_id=rid or new_request_id()):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # ------------------------------------------------------------------------- helpers

    def _key(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """The cache key of this URL (method-independent), or None when it has none.

        Memoized per (scheme, host, path, query) once a page is stored under the key: a
        hot URL's key costs one dict lookup, and URLs never stored (cache-busting
        queries, a crawler) do not churn the memo.
        """
        scheme = scope.get("scheme", "http")
        host = headers.get("host")
        path = scope["path"]
        query = scope.get("query_string", b"")
        memo_key = (scheme, host, path, query)
        key = self._keys.get(memo_key, _UNKNOWN)
        if key is not _UNKNOWN:
            return key  # type: ignore[return-value]
        server = None
        if host is None:
            addr = scope.get("server")
            if addr:
                server = f"{addr[0]}:{addr[1]}" if addr[1] is not None else str(addr[0])
        primary = self.policy.primary_key(scheme, host, path, query, server=server)
        if primary is None:
            key = None
        else:
            key = self.key_prefix + primary
            if not self.cache.holds(key):
                return key
        if server is None:  # a key from the server address is not memoized: rare
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[memo_key] = key
        return key

    def policy_for(self, ttl: Any) -> HttpCachePolicy:
        """The policy with ``default_ttl=ttl`` (an endpoint's :func:`cache_endpoint` TTL).

        A bad value set by hand in the request context is logged and ignored.
        """
        if ttl is None:
            return self.policy
        policy = self._policies.get(ttl)
        if policy is None:
            try:
                policy = dataclasses.replace(self.policy, default_ttl=ttl)
            except (ConfigurationError, TypeError):
                logger.warning("ignoring invalid cache_ttl %r in the request context", ttl)
                return self.policy
            if len(self._policies) >= 256:
                self._policies.clear()
            self._policies[ttl] = policy
        return policy

    def __repr__(self) -> str:
        caching = "all" if self._cache_all else list(self._prefixes) or "off"
        return f"<CachePlugMiddleware plug={self.plug.name!r} cache_responses={caching}>"


def _echo(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """Wrap ``send`` to add ``extra`` headers to the response start."""

    async def echo_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*(message.get("headers") or ()), *extra]}
        await send(message)

    return echo_send
