"""The ``django`` suite: CachePlugCache against Django's own and third-party backends.

1. **Backend ops through ``django.core.cache.caches[...]``**: get-hit of a short str and
   of a small dict, set, get_many(10) and incr, for CachePlugCache, LocMemCache (the
   reference), diskcache's ``DjangoCache`` and django-redis on the local Redis
   (``$REDIS_URL``, default ``redis://127.0.0.1:6379/0``; its keys carry a prefix of their
   own and are deleted at the end). Every contender holds the same 10,000 keys.
2. **A page-cache hit under Django's WSGI handler**: cacheplug's ``CacheMiddleware``
   against Django's ``cache_page`` on LocMemCache (the reference) and the same trivial
   view uncached. Each request is a full ``WSGIHandler`` call (request object, signals,
   middleware, response iteration and close) on a fresh copy of one environ.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks import _harness as h

SUITE = "django"
LOCMEM = "Django LocMemCache"
CACHEPLUG = "cacheplug CachePlugCache"
DISKCACHE = "diskcache DjangoCache"
DJANGO_REDIS = "django-redis"
PAGE_REFERENCE = "Django cache_page (LocMemCache)"
PAGE_CACHEPLUG = "cacheplug CacheMiddleware"
PAGE_UNCACHED = "uncached view"
KEYS = 10_000
SMALL_DICT = {"id": 12345, "name": "Ada", "roles": ["admin", "dev"], "active": True}
REDIS_PREFIX = "cacheplug-bench-django"


# -- Django set-up -------------------------------------------------------------------------


def _view(request: Any) -> Any:
    from django.http import HttpResponse

    response = HttpResponse(b"hello, world", content_type="text/plain")
    response["Cache-Control"] = "max-age=300"
    return response


def _cache_page_view(request: Any) -> Any:
    from django.views.decorators.cache import cache_page

    global _decorated
    if _decorated is None:
        _decorated = cache_page(300, cache="bench-locmem")(_view)
    return _decorated(request)


_decorated: Callable[..., Any] | None = None


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("page/", _view), path("cache-page/", _cache_page_view)]


class _Urls:
    """A ROOT_URLCONF object (Django accepts a module or any object with urlpatterns)."""

    @property
    def urlpatterns(self) -> list[Any]:
        return _urlpatterns()


def _caches(state: str) -> dict[str, Any]:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "bench-locmem": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "bench-locmem",
            "OPTIONS": {"MAX_ENTRIES": 4 * KEYS},
        },
        "bench-cacheplug": {
            "BACKEND": "cacheplug.integrations.django.CachePlugCache",
            "LOCATION": "bench-cacheplug",
            "OPTIONS": {"MAX_ENTRIES": 4 * KEYS, "SWEEP_INTERVAL": 0},
        },
        "bench-diskcache": {
            "BACKEND": "diskcache.DjangoCache",
            "LOCATION": os.path.join(state, "diskcache"),
        },
        "bench-redis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": REDIS_PREFIX,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        },
    }


@contextlib.contextmanager
def _django(state: str, middleware: list[str] | None = None) -> Iterator[None]:
    """Configure Django if nobody has, then override what the suite needs."""
    import django
    from django.conf import settings
    from django.test.utils import override_settings

    if not settings.configured:
        settings.configure(SECRET_KEY="bench", ALLOWED_HOSTS=["*"], USE_TZ=True)
        django.setup()
    with override_settings(
        CACHES=_caches(state),
        ROOT_URLCONF=_Urls(),
        MIDDLEWARE=middleware or [],
        ALLOWED_HOSTS=["*"],
        DEBUG=False,
        CACHEPLUG_PAGE_CACHE={"ALIAS": "bench-cacheplug"},
    ):
        yield


# -- section 1: backend ops ------------------------------------------------------------------


def _backend(alias: str, name: str, dist: str) -> h.Contender:
    def prepare() -> h.Target:
        from django.core.cache import caches

        if alias == "bench-diskcache":
            import diskcache  # noqa: F401  (ImportError = skipped)
        if alias == "bench-redis":
            import django_redis  # noqa: F401

        cache = caches[alias]
        try:
            cache.clear() if alias != "bench-redis" else cache.delete_pattern("*")
            for i in range(KEYS):
                cache.set(f"user:{i}", f"value-{i:08d}", 300)
                cache.set(f"dict:{i}", SMALL_DICT, 300)
            cache.set("counter", 0, None)
        except Exception as exc:  # Redis down: skip with the reason, never silently
            raise ImportError(f"{name} unavailable: {exc}") from exc

        def close() -> None:
            if alias == "bench-redis":
                cache.delete_pattern("*")  # only keys under the suite's own prefix
            else:
                cache.clear()

        return h.Target(get=cache.get, set=cache.set, delete=cache.delete, raw=cache, close=close)

    return h.Contender(name, h.dist_version(dist), prepare)


def _loop(fn: Callable[[int], None]) -> Callable[[h.Target, int, int], h.Runner]:
    return lambda target, part, parts: h.Runner(lambda n: fn_for(target, fn, n))


def fn_for(target: h.Target, fn: Callable[..., None], n: int) -> None:
    fn(target.raw, n)


@functools.cache
def _keys(kind: str, count: int) -> list[Any]:
    """Key lists built once, outside the timed loops."""
    if kind == "batches":
        return [[f"user:{(j * 10 + k) % count}" for k in range(10)] for j in range(100)]
    return [f"{kind}:{i}" for i in range(count)]


def _get_str(cache: Any, n: int) -> None:
    get = cache.get
    keys = _keys("user", KEYS)
    size = len(keys)
    for i in range(n):
        get(keys[i % size])


def _get_dict(cache: Any, n: int) -> None:
    get = cache.get
    keys = _keys("dict", KEYS)
    size = len(keys)
    for i in range(n):
        get(keys[i % size])


def _set(cache: Any, n: int) -> None:
    set_ = cache.set
    keys = _keys("user", KEYS)
    size = len(keys)
    for i in range(n):
        set_(keys[i % size], "fresh-value", 300)


def _get_many(cache: Any, n: int) -> None:
    get_many = cache.get_many
    batches = _keys("batches", KEYS)
    for i in range(n):
        get_many(batches[i % 100])


def _incr(cache: Any, n: int) -> None:
    incr = cache.incr
    for _ in range(n):
        incr("counter")


BACKEND_OPS = [
    h.Op("get-hit str", _loop(_get_str)),
    h.Op("get-hit small dict", _loop(_get_dict)),
    h.Op("set", _loop(_set)),
    h.Op("get_many(10)", _loop(_get_many)),
    h.Op("incr", _loop(_incr)),
]


# -- section 2: page cache under the WSGI handler ----------------------------------------------


def _environ(path: str) -> dict[str, Any]:
    import io

    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench.local",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "bench.local",
        "HTTP_ACCEPT": "text/html",
        "HTTP_USER_AGENT": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def _page(name: str, path: str, middleware: list[str], state: str) -> h.Contender:
    def prepare() -> h.Target:
        from django.core.handlers.wsgi import WSGIHandler

        with _django(state, middleware):
            handler = WSGIHandler()  # loads MIDDLEWARE now
        base = _environ(path)
        statuses: list[str] = []

        def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
            statuses.append(status)

        def request(_: Any = None) -> bytes:
            response = handler(dict(base), start_response)
            body = b"".join(response)
            response.close()
            return body

        body = request()  # warm the cache (a miss stores it)
        statuses.clear()
        if request() != body or not statuses[0].startswith("200"):
            raise RuntimeError(f"{name}: unexpected response {statuses}")
        return h.Target(get=request, set=request, delete=request, raw=request)

    return h.Contender(name, h.dist_version("django"), prepare)


def _requests(target: h.Target, part: int, parts: int) -> h.Runner:
    request = target.raw

    def run(n: int) -> None:
        for _ in range(n):
            request()

    return h.Runner(run)


# -- the suite ---------------------------------------------------------------------------------


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Run both sections; print markdown tables and targets; write JSON; return rows."""
    with h.use_settings(smoke=smoke or h.current_settings().smoke):
        state = tempfile.mkdtemp(prefix="cacheplug-bench-django-")
        try:
            return _run(state)
        finally:
            shutil.rmtree(state, ignore_errors=True)


def _run(state: str) -> list[dict[str, Any]]:
    global KEYS
    smoke = h.current_settings().smoke
    if smoke:
        KEYS = 200
    backends = [
        _backend("bench-locmem", LOCMEM, "django"),
        _backend("bench-cacheplug", CACHEPLUG, "cacheplug"),
        _backend("bench-diskcache", DISKCACHE, "diskcache"),
        _backend("bench-redis", DJANGO_REDIS, "django-redis"),
    ]
    versions = {c.name: c.version for c in backends}
    h.out(h.header(SUITE, versions, f"{KEYS:,} keys per contender; values: short str, small dict"))
    h.out("\n## Backend ops through `django.core.cache.caches[...]`\n")
    with _django(state):
        prepared = h.prepare_all(backends)
        try:
            rows = h.measure(prepared, BACKEND_OPS, reference=LOCMEM, section="backend")
        finally:
            h.close_all(prepared)
        h.out(h.results_table(rows, LOCMEM))
    h.out("- cacheplug's Redis tier: measured in the `redis` suite")

    h.out("\n## Page-cache hit under Django's WSGI handler\n")
    ours = ["cacheplug.integrations.django.CacheMiddleware"]
    pages = [
        _page(PAGE_REFERENCE, "/cache-page/", [], state),
        _page(PAGE_CACHEPLUG, "/page/", ours, state),
        _page(PAGE_UNCACHED, "/page/", [], state),
    ]
    with _django(state):
        prepared = h.prepare_all(pages)
        try:
            page_rows = h.measure(
                prepared, [h.Op("GET hit", _requests)], reference=PAGE_REFERENCE, section="page"
            )
        finally:
            h.close_all(prepared)
            from django.core.cache import caches

            caches["bench-cacheplug"].clear()
            caches["bench-locmem"].clear()
    h.out(h.results_table(page_rows, PAGE_REFERENCE))

    found = _targets(rows, page_rows)
    h.out("\n## Targets\n")
    h.out(h.targets_table(found))
    all_rows = [*rows, *page_rows, *found]
    h.write_results(SUITE, versions, all_rows)
    if smoke:
        KEYS = 10_000
    return all_rows


def _targets(rows: list[dict[str, Any]], page_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = [
        ("get-hit str >= 3x LocMemCache", rows, CACHEPLUG, LOCMEM, "get-hit str", 3.0),
        (
            "get-hit small dict >= 1.2x LocMemCache",
            rows,
            CACHEPLUG,
            LOCMEM,
            "get-hit small dict",
            1.2,
        ),
        ("set >= 1.5x LocMemCache", rows, CACHEPLUG, LOCMEM, "set", 1.5),
        (
            "page hit >= 2x Django cache_page (LocMem)",
            page_rows,
            PAGE_CACHEPLUG,
            PAGE_REFERENCE,
            "GET hit",
            2.0,
        ),
    ]
    found = []
    for name, source, a, b, op, target in wanted:
        ratio = h.ratio_of(source, a, b, op)
        found.append(
            {
                "section": "targets",
                "target_name": name,
                "target": target,
                "ratio": ratio,
                "status": "met" if ratio >= target else "missed",
            }
        )
    return found
