"""fastapi_shop: a small shop showing cacheplug's ASGI adapter (the app ``cacheplug demo`` runs).

* ``CachePlugMiddleware`` caches the catalog (``/products...``) by RFC 9111 rules:
  ``X-Cache: HIT``, ``Age``, a strong ``ETag`` and 304s; the lookups behind it are slow
  (a short sleep stands in for the database);
* ``@cache_endpoint`` gives each product page its tags, so ``PUT /products/{id}/price``
  purges exactly that page and the list with ``plug.invalidate_tags``;
* ``GET /online``: "who is online", one TTL entry per user refreshed on every request
  that carries ``X-User``;
* every log line carries the request id (``RequestIdFilter``; send ``X-Request-ID`` to
  choose it, it is echoed back); every response says which worker answered
  (``X-Worker-Pid``, used by ``scripts/check_coherence.py``);
* the dashboard at ``/_cacheplug/`` (loopback clients only, unless
  ``CACHEPLUG_DASHBOARD_TOKEN`` is set) and Prometheus metrics at ``/metrics``;
* the plug is built at import from the environment (``CachePlug.from_env``):
  ``CACHEPLUG_STATE_DIR`` (saved on shutdown, loaded on startup: warm restarts),
  ``CACHEPLUG_SECRET`` and any other ``CACHEPLUG_<OPTION>``. No Redis unless
  ``CACHEPLUG_REDIS_URL`` is set.

Run it from the repository root::

    CACHEPLUG_STATE_DIR=/tmp/shop CACHEPLUG_SECRET=change-me \\
        uvicorn app:app --app-dir example_projects/fastapi_shop
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from cacheplug import CachePlug
from cacheplug.context import RequestContext
from cacheplug.integrations.asgi import (
    CachePlugMiddleware,
    RequestIdFilter,
    cache_endpoint,
    request_context_dep,
)

#: Seconds a user counts as online after their last request.
ONLINE_TTL = 60.0
#: The simulated database's latency per lookup.
LOOKUP_DELAY = float(os.environ.get("SHOP_LOOKUP_DELAY", "0.05"))

log = logging.getLogger("fastapi_shop")
if not log.handlers:  # importing twice must not print every line twice
    _handler = logging.StreamHandler()
    _handler.addFilter(RequestIdFilter())
    _handler.setFormatter(logging.Formatter("%(asctime)s [%(request_id)s] %(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

# Every CACHEPLUG_<OPTION> variable overrides these defaults: CACHEPLUG_STATE_DIR,
# CACHEPLUG_SECRET, CACHEPLUG_TTL=60, ... With several workers, CACHEPLUG_REDIS_URL
# turns on the Redis tier that keeps their caches coherent (docs/deploy.md).
plug = CachePlug.from_env(ttl=300, name="shop")

#: The "database", with a counter of lookups so the effect of caching shows.
PRODUCTS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "Teapot", "price": 25.0},
    2: {"id": 2, "name": "Kettle", "price": 40.0},
    3: {"id": 3, "name": "Mug", "price": 8.5},
}
LOOKUPS = {"count": 0}


async def lookup(product_id: int | None = None) -> Any:
    """A slow query: all products, or one (None if missing)."""
    LOOKUPS["count"] += 1
    await asyncio.sleep(LOOKUP_DELAY)
    if product_id is None:
        return [dict(p) for p in PRODUCTS.values()]
    product = PRODUCTS.get(product_id)
    return dict(product) if product else None


app = FastAPI(title="fastapi_shop")


class MarkOnline:
    """Pure ASGI: refresh the caller's "online" entry (one TTL entry per user, no cleanup
    job) on every request, cached pages included, since it wraps the cache middleware;
    and add ``X-Worker-Pid`` to every response, so a client can tell workers apart."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pid_header = (b"x-worker-pid", str(os.getpid()).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"x-user" and value:
                user = value.decode("latin-1")[:64]
                plug.cache.set(f"online:{user}", True, ttl=ONLINE_TTL)
                break
        # Read at request time: a forked worker (gunicorn --preload) has its own pid.
        pid = self.pid_header if int(self.pid_header[1]) == os.getpid() else None
        if pid is None:
            pid = self.pid_header = (b"x-worker-pid", str(os.getpid()).encode())

        async def send_with_pid(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), pid]}
            await send(message)

        await self.app(scope, receive, send_with_pid)


@app.get("/products")
@cache_endpoint(ttl=120, tags=["products"])
async def list_products() -> list[dict[str, Any]]:
    log.info("listing products (slow lookup)")
    return await lookup()


@app.get("/products/{product_id}")
@cache_endpoint(ttl=300, tags=["product:{product_id}"])
async def get_product(product_id: int) -> dict[str, Any]:
    log.info("loading product %s (slow lookup)", product_id)
    product = await lookup(product_id)
    if product is None:
        raise HTTPException(404, f"no product {product_id}")
    return product


class Price(BaseModel):
    price: float


@app.put("/products/{product_id}/price")
async def set_price(product_id: int, body: Price) -> dict[str, Any]:
    if product_id not in PRODUCTS:
        raise HTTPException(404, f"no product {product_id}")
    PRODUCTS[product_id]["price"] = body.price
    plug.invalidate_tags(f"product:{product_id}", "products")  # its page and the list
    log.info("price of product %s set to %s; its pages purged", product_id, body.price)
    return dict(PRODUCTS[product_id])


@app.get("/online")
async def who_is_online() -> dict[str, Any]:
    """Users seen in the last ONLINE_TTL seconds (expired entries are simply gone)."""
    users = sorted(str(k)[len("online:") :] for k in plug.cache if str(k).startswith("online:"))
    return {"online": users, "window_seconds": ONLINE_TTL}


@app.get("/whoami")
async def whoami(ctx: Annotated[RequestContext, Depends(request_context_dep)]) -> dict[str, Any]:
    log.info("whoami")
    return {"request_id": ctx.request_id}


@app.get("/stats")
async def stats() -> dict[str, Any]:
    s = plug.cache.stats()
    return {
        "hits": s.hits,
        "misses": s.misses,
        "lookups": LOOKUPS["count"],
        "size": len(plug.cache),
    }


# Only the catalog is cached; /online, /whoami and /stats always run. The dashboard
# (/_cacheplug/) answers loopback clients only unless CACHEPLUG_DASHBOARD_TOKEN is set;
# /metrics is for a Prometheus scraper on the private network. MarkOnline is added last,
# so it is outermost and sees cached hits too.
app.add_middleware(
    CachePlugMiddleware,
    plug=plug,
    cache_responses=["/products"],
    dashboard=True,
    metrics=True,
)
app.add_middleware(MarkOnline)
