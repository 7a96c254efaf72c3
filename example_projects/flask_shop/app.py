"""flask_shop: a small shop showing cacheplug's Flask adapter.

* ``plug = FlaskCachePlug()`` at module level, ``plug.init_app(app)`` in the factory;
* ``GET /products`` and ``GET /products/<id>``: whole responses cached with
  ``@plug.cached`` under tags, answered with ``X-Cache: HIT`` and an ``ETag``;
* ``load_product``: a lookup memoized with ``@plug.memoize``;
* ``POST /products/<id>/price``: changes a price and invalidates by tag;
* ``GET /account``: a per-user page marked ``private``, which is never shared;
* ``GET /whoami``: the request context (request id, a per-request memo);
* ``/_cacheplug/`` and ``/metrics`` with ``FLASK_CACHEPLUG_DASHBOARD=true`` and
  ``FLASK_CACHEPLUG_METRICS=true`` (off by default).

Run it (from the repository root)::

    FLASK_SECRET_KEY=change-me FLASK_CACHEPLUG_STATE_DIR=/tmp/flask_shop_state \\
        flask --app example_projects/flask_shop/app.py run
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, jsonify, make_response, request

from cacheplug import request_cached, request_context
from cacheplug.integrations.flask import FlaskCachePlug

plug = FlaskCachePlug(ttl=300)

#: The "database": a dict plus a counter of queries, so the effect of caching shows.
PRODUCTS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "Teapot", "price": 25.0},
    2: {"id": 2, "name": "Kettle", "price": 40.0},
    3: {"id": 3, "name": "Mug", "price": 8.5},
}
USERS = {"alice-token": "alice", "bob-token": "bob"}
QUERIES = {"products": 0, "users": 0}
_db_lock = threading.Lock()


def _query(table: str) -> None:
    with _db_lock:
        QUERIES[table] += 1


@plug.memoize(timeout=600)
def load_product(product_id: int) -> dict[str, Any] | None:
    """One product by id (a "slow" query, memoized in the app's cache)."""
    _query("products")
    product = PRODUCTS.get(product_id)
    return dict(product) if product else None


@request_cached
def current_user() -> str | None:
    """The caller, looked up once per request however many times it is asked for."""
    _query("users")
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return USERS.get(token)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory: ``FLASK_*`` environment variables, then ``config``."""
    app = Flask("flask_shop")
    app.config.from_mapping(SECRET_KEY="dev-only-secret", CACHEPLUG_TTL=300)
    app.config.from_prefixed_env()  # FLASK_CACHEPLUG_STATE_DIR -> CACHEPLUG_STATE_DIR
    app.config.update(config or {})
    plug.init_app(app)

    @app.after_request
    def add_request_id(response):
        response.headers["X-Request-ID"] = request_context.request_id or "-"
        return response

    @app.get("/products")
    @plug.cached(timeout=60, tags=["products"])
    def products():
        _query("products")
        return jsonify(sorted(PRODUCTS.values(), key=lambda p: p["id"]))

    @app.get("/products/<int:product_id>")
    @plug.cached(timeout=60, tags=lambda product_id: ["products", f"product:{product_id}"])
    def product(product_id: int):
        found = load_product(product_id)
        if found is None:
            return jsonify(error="no such product"), 404
        return jsonify(found)

    @app.post("/products/<int:product_id>/price")
    def set_price(product_id: int):
        if product_id not in PRODUCTS:
            return jsonify(error="no such product"), 404
        PRODUCTS[product_id]["price"] = float(request.get_json(force=True)["price"])
        # Tags hide the product's page and the listing at once, in O(1); the memo of
        # this one product is dropped by its arguments.
        plug.invalidate_tags(f"product:{product_id}", "products")
        plug.delete_memoized(load_product, product_id)
        return jsonify(ok=True)

    @app.get("/account")
    @plug.cached(timeout=60)
    def account():
        user = current_user()
        if user is None:
            return jsonify(error="log in"), 401
        response = make_response(jsonify(user=user, basket=[1, 3]))
        response.headers["Cache-Control"] = "private, no-store"  # never shared
        return response

    @app.get("/whoami")
    def whoami():
        current_user()
        user = current_user()  # memoized for this request only
        request_context.set("seen_by", "whoami")
        return jsonify(user=user, request_id=request_context.request_id)

    @app.get("/stats")
    def stats():
        cache = plug.stats().cache
        return jsonify(hits=cache.hits, misses=cache.misses, size=cache.size, queries=dict(QUERIES))

    return app
