"""A minimal multi-worker app for ``scripts/check_coherence.py`` (used by
``tests/test_tier_coherence_http.py``): run it under ``uvicorn --workers N``.

Unlike ``example_projects/fastapi_shop`` (whose "database" is a dict in each process),
the data lives in one SQLite file every worker shares, so a stale response can only
come from a cache. Environment: ``COHERENCE_DB`` (the SQLite path, required),
``CACHEPLUG_REDIS_URL`` (unset: no tier, each worker keeps its own stale copies),
``CACHEPLUG_SECRET``, ``COHERENCE_PREFIX`` (the tier's namespace).

* ``GET /items/{id}``: ``plug.aget_or_set`` with the tag ``item:{id}``, TTL 300 s;
* ``PUT /items/{id}`` with a JSON body: writes the row, then ``plug.invalidate_tags``;
* every response carries ``X-Worker-Pid``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cacheplug import CachePlug

DB = os.environ["COHERENCE_DB"]
plug = CachePlug(
    ttl=300,
    redis_url=os.environ.get("CACHEPLUG_REDIS_URL") or None,
    redis_prefix=os.environ.get("COHERENCE_PREFIX") or None,
    sweep_interval=0,
    name="coherence",
)


def _connect() -> sqlite3.Connection:
    db = sqlite3.connect(DB, timeout=10, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT)")
    return db


def _respond(body: str) -> Response:
    headers = {"X-Worker-Pid": str(os.getpid())}
    return Response(body, media_type="application/json", headers=headers)


async def get_item(request: Request) -> Response:
    item = int(request.path_params["item"])

    async def load() -> str:
        with contextlib.closing(_connect()) as db:
            row = db.execute("SELECT body FROM items WHERE id = ?", (item,)).fetchone()
        return row[0] if row else "null"

    return _respond(await plug.aget_or_set(f"item:{item}", load, tags=(f"item:{item}",)))


async def put_item(request: Request) -> Response:
    item = int(request.path_params["item"])
    body = json.dumps(await request.json(), sort_keys=True)
    with contextlib.closing(_connect()) as db:
        db.execute("INSERT OR REPLACE INTO items (id, body) VALUES (?, ?)", (item, body))
    plug.invalidate_tags(f"item:{item}")
    return _respond(body)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await plug.astart()
    try:
        yield
    finally:
        await plug.aclose()


app = Starlette(
    routes=[
        Route("/items/{item}", get_item, methods=["GET"]),
        Route("/items/{item}", put_item, methods=["PUT"]),
    ],
    lifespan=lifespan,
)
