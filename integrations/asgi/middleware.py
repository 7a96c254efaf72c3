"""``CachePlugMiddleware``: pure ASGI request context, response caching and lifespan.

Order of work for an HTTP request:

1. Parse the request headers once (latin-1, never fails) and pick the request id.
2. If response caching covers the path: decide from method and ``Cache-Control``
   (memoized per header shape), build the primary key, one ``cache.get``. A usable
   stored variant is sent straight away, with headers encoded when it was stored plus
   ``Age`` and ``X-Cache: HIT`` (or a 304): the app is never called and no request
   context is opened, because no user code runs.
3. Otherwise open the request-context scope (request id inside) and call the app; on a
   cacheable miss its ``send`` is a :class:`~._recorder.ResponseRecorder` that stores the
   complete response after it went out.

``websocket`` scopes get the request-context scope; ``lifespan`` scopes start and close
the plug (:func:`~.lifespan.run_lifespan`); anything else passes through.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Sequence
from typing import Any

from cacheplug.context import request_context
from cacheplug.errors import ConfigurationError
from cacheplug.http import HttpCachePolicy, request_headers_from_asgi
from cacheplug.runtime import CachePlug

from ._recorder import ResponseRecorder
from ._types import ASGIApp, Receive, Scope, Send
from .lifespan import STATE_KEY, run_lifespan

__all__ = ("CachePlugMiddleware",)

logger = logging.getLogger("cacheplug.asgi")

_MAX_REQUEST_ID = 200
_BYPASS = (b"x-cache", b"BYPASS")


class _RequestIds:
    """Request ids: a random per-process prefix plus a counter (uuid4 costs a syscall)."""

    def __init__(self) -> None:
        self.reseed()
        # A forked worker must not repeat its parent's ids.
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)

    def new(self) -> str:
        return "%s%016x" % (self.prefix, next(self.counter))  # noqa: UP031 (fastest)


_IDS = _RequestIds()


def _valid_id(value: str) -> bool:
    """An incoming id is honoured only if short, ASCII and printable (no log injection)."""
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable()


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
    :raises ConfigurationError: an option has the wrong type; the message names it.
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

    # ------------------------------------------------------------------------ dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        headers = request_headers_from_asgi(scope["headers"])
        rid = None
        if self._trust_id:
            rid = headers.get(self._id_name)  # type: ignore[arg-type]
            if rid is not None and not _valid_id(rid):
                rid = None
        if rid is None:
            rid = _IDS.new()
        extra = [(self._id_raw, rid.encode("latin-1"))] if self._id_raw is not None else []

        if self._caching and (self._cache_all or scope["path"].startswith(self._prefixes)):
            method = scope["method"]
            decision = self.policy.request_decision(method, headers)
            if decision.lookup or decision.store or decision.invalidate:
                key = self._key(scope, headers)
                if key is not None:
                    if decision.lookup:
                        variants = self.cache.get(key)
                        if variants is not None:
                            policy = self.policy
                            now = policy.clock()
                            entry = policy.select(variants, headers, decision, now)
                            if entry is not None:
                                status, out, body = entry.respond(
                                    headers, now, head=method == "HEAD", asgi=True
                                )
                                if extra:
                                    out.append(extra[0])
                                await send(
                                    {
                                        "type": "http.response.start",
                                        "status": status,
                                        "headers": out,
                                    }
                                )
                                await send({"type": "http.response.body", "body": body})
                                return
                    send = ResponseRecorder(self, key, headers, decision, send, extra)
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
        with request_context.scope(request_id=rid):
            await self.app(scope, receive, send)

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
                        rid = rid if _valid_id(rid) else None
                        break
            with request_context.scope(request_id=rid or _IDS.new()):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # ------------------------------------------------------------------------- helpers

    def _key(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """The cache key of this URL (method-independent), or None when it has none.

        Memoized per (scheme, host, path, query): a hot URL's key costs one dict lookup.
        """
        scheme = scope.get("scheme", "http")
        host = headers.get("host")
        path = scope["path"]
        query = scope.get("query_string", b"")
        memo_key = (scheme, host, path, query)
        try:
            return self._keys[memo_key]
        except KeyError:
            pass
        server = None
        if host is None:
            addr = scope.get("server")
            if addr:
                server = f"{addr[0]}:{addr[1]}" if addr[1] is not None else str(addr[0])
        primary = self.policy.primary_key(scheme, host, path, query, server=server)
        key = None if primary is None else self.key_prefix + primary
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
