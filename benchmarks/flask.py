"""The ``flask`` suite: a cached view's hit path, through direct WSGI calls.

Every contender is a real Flask app with the same view (an HTML list of 50 items,
~1.6 KB). The environ is built once; each call passes a copy of it to
``app.wsgi_app(environ, start_response)`` and consumes and closes the body, as a WSGI
server would. The cache is warmed before timing, so every timed call of a cached
contender is a hit.

Contenders: the uncached view (reference), Flask-Caching's ``@cached`` on
``SimpleCache``, and cacheplug's ``@plug.cached`` with early hits (answered before Flask
dispatches) and without them (answered inside the view, after Flask's request setup).
Target: cacheplug >= 1.3x Flask-Caching SimpleCache requests/s.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from benchmarks import _harness as h

SUITE = "flask"
REFERENCE = "uncached view"
TARGET = 1.3
OP = "GET /items hit"


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/items",
        "QUERY_STRING": "",
        "SERVER_NAME": "shop.test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "shop.test",
        "HTTP_ACCEPT": "text/html",
        "HTTP_ACCEPT_ENCODING": "gzip, br",
        "HTTP_USER_AGENT": "bench/1.0",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _render() -> str:
    items = "".join(f"<li>item {i}: a teapot in colour {i % 7}</li>" for i in range(50))
    return f"<html><body><ul>{items}</ul></body></html>"


def _caller(app: Any) -> Callable[[int], None]:
    """``run(n)``: n WSGI calls with a fresh environ copy, body consumed and closed."""
    base = _environ()
    wsgi = app.wsgi_app
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        statuses.append(status)

    def run(n: int) -> None:
        for _ in range(n):
            body = wsgi(dict(base), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if statuses[-1] != "200 OK":
            raise RuntimeError(f"unexpected status {statuses[-1]}")
        statuses.clear()

    run(3)  # warm: the first call stores, the next ones hit
    return run


def _target(app: Any, close: Callable[[], None] = h._noop) -> h.Target:
    run = _caller(app)
    return h.Target(get=run, set=run, delete=run, raw=run, close=close)


def _uncached() -> h.Target:
    from flask import Flask

    app = Flask("bench_uncached")
    app.add_url_rule("/items", "items", _render)
    return _target(app)


def _flask_caching() -> h.Target:
    from flask import Flask
    from flask_caching import Cache

    app = Flask("bench_flask_caching")
    cache = Cache(app, config={"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 3600})
    app.add_url_rule("/items", "items", cache.cached(timeout=3600)(_render))
    return _target(app)


def _cacheplug(early: bool) -> Callable[[], h.Target]:
    def prepare() -> h.Target:
        from flask import Flask

        from cacheplug.integrations.flask import FlaskCachePlug

        plug = FlaskCachePlug()
        app = Flask(f"bench_cacheplug_{'early' if early else 'inview'}")
        app.config.update(CACHEPLUG_EARLY_HITS=early, CACHEPLUG_SWEEP_INTERVAL=0)
        plug.init_app(app)
        app.add_url_rule("/items", "items", plug.cached(timeout=3600)(_render))
        target = _target(app, close=lambda: plug.close(app))
        if plug.stats(app).cache.hits < 2:
            raise RuntimeError("cacheplug contender is not hitting its cache")
        return target

    return prepare


def contenders() -> list[h.Contender]:
    """Every contender of the suite, the reference first."""
    flask_version = h.dist_version("flask")
    return [
        h.Contender(REFERENCE, flask_version, _uncached),
        h.Contender(
            "Flask-Caching SimpleCache @cached", h.dist_version("flask-caching"), _flask_caching
        ),
        h.Contender(
            "cacheplug @cached (early hits)", h.dist_version("cacheplug"), _cacheplug(True)
        ),
        h.Contender(
            "cacheplug @cached (hits in view)", h.dist_version("cacheplug"), _cacheplug(False)
        ),
    ]


def _op() -> h.Op:
    return h.Op(OP, lambda target, part, parts: h.Runner(target.raw))


def target_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The suite's targets: each cacheplug contender against Flask-Caching SimpleCache."""
    found = []
    for name in ("cacheplug @cached (early hits)", "cacheplug @cached (hits in view)"):
        ratio = h.ratio_of(rows, name, "Flask-Caching SimpleCache @cached", OP)
        if ratio != ratio:  # NaN: a contender was skipped
            continue
        found.append(
            {
                "section": "targets",
                "target_name": f"{name} >= {TARGET}x Flask-Caching SimpleCache",
                "target": TARGET,
                "ratio": ratio,
                "status": "met" if ratio >= TARGET else "missed",
            }
        )
    return found


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Measure, print the table and the targets, write JSON; return every row."""
    cs = contenders()
    versions = {c.name: c.version for c in cs}
    h.out(h.header(SUITE, versions, "direct WSGI calls; environ copied per call; all hits"))
    h.out()
    prepared = h.prepare_all(cs)
    try:
        rows = h.measure(prepared, [_op()], reference=REFERENCE, smoke_loops=50)
    finally:
        h.close_all(prepared)
    h.out()
    h.out(h.results_table(rows, REFERENCE))
    found = target_rows(rows)
    h.out("\n## Targets\n")
    h.out(h.targets_table(found))
    all_rows = [*rows, *found]
    h.write_results(SUITE, versions, all_rows)
    return all_rows
