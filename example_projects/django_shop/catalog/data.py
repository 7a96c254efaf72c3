"""Data access with the cache: the catalogue (tagged), recently viewed, who is online.

* The catalogue lives in the plug's store under tags (``products``, ``product:<id>``),
  through ``cache.plug.get_or_set``: single-flight, so a burst of misses loads once.
  Django's cache API has no tags; the plug behind ``CachePlugCache`` does.
* "Recently viewed" is per user, stored with Django's cache API and read at most once
  per request: ``@request_cached`` keeps it in the request context, however many times
  the view and the template ask.
* "Who is online" is one short-lived entry per user (``online:<name>``, timeout
  ``SHOP_ONLINE_SECONDS``): a user is online while the entry has not expired.

``LOADS`` counts the "slow" loads, so ``/stats/`` shows what the cache saved.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from cacheplug import request_cached, request_context

from .models import Product

CATALOG_KEY = "catalog:all"
CATALOG_TTL = 300
RECENT_LENGTH = 5
RECENT_TIMEOUT = 7 * 24 * 3600

LOADS: Counter[str] = Counter()
_loads_lock = threading.Lock()


def _loaded(what: str) -> None:
    with _loads_lock:
        LOADS[what] += 1


@dataclass(frozen=True, slots=True)
class Item:
    """A product as the pages show it; frozen, so the cached object can be shared."""

    id: int
    name: str
    price_cents: int


def _item(product: Product) -> Item:
    return Item(product.pk, product.name, product.price_cents)


def catalog() -> tuple[Item, ...]:
    """Every product, loaded once per CATALOG_TTL or until a product changes."""

    def load() -> tuple[Item, ...]:
        _loaded("catalog")
        return tuple(_item(p) for p in Product.objects.order_by("pk"))

    return cache.plug.get_or_set(CATALOG_KEY, load, CATALOG_TTL, tags=("products",))


def product(pk: int) -> Item | None:
    """One product (None if there is none: a cached miss, dropped when products change)."""

    def load() -> Item | None:
        _loaded("product")
        found = Product.objects.filter(pk=pk).first()
        return None if found is None else _item(found)

    return cache.plug.get_or_set(
        f"catalog:product:{pk}", load, CATALOG_TTL, tags=("products", f"product:{pk}")
    )


def invalidate_product(pk: int) -> None:
    """Drop everything that shows product ``pk``: data by tag, pages, the price fragment.

    Tag invalidation is O(1); the page-cache entries are hidden at once and removed by the
    worker. Called from the ``post_save``/``post_delete`` receivers in ``signals.py``.
    """
    from django.core.cache.utils import make_template_fragment_key

    cache.plug.invalidate_tags("products", f"product:{pk}")
    cache.plug.delete_matching("cacheplug.page:*")  # every page lists products
    cache.delete(make_template_fragment_key("price", [pk]))


def _user():
    user = request_context.get("user")  # set lazily by RequestContextMiddleware
    return user if user is not None and user.is_authenticated else None


@request_cached
def recently_viewed() -> tuple[int, ...]:
    """The current user's recently viewed product ids, newest first; read once per request."""
    _loaded("recent")
    user = _user()
    if user is None:
        return ()
    return cache.get(f"recent:{user.pk}", ())


def remember_view(pk: int) -> None:
    """Put ``pk`` first in the current user's recently viewed list."""
    user = _user()
    if user is None:
        return
    recent = (pk, *(p for p in recently_viewed() if p != pk))[:RECENT_LENGTH]
    cache.set(f"recent:{user.pk}", recent, RECENT_TIMEOUT)


def mark_online() -> None:
    """Record that the current user is active; the entry expires on its own."""
    user = _user()
    if user is not None:
        cache.set(f"online:{user.get_username()}", True, settings.SHOP_ONLINE_SECONDS)


def online_users() -> list[str]:
    """Users whose ``online:`` entry has not expired, sorted.

    Scans the store's live keys (a snapshot list): fine for a demo's few thousand
    entries; a large site would keep one entry per minute holding a set of names.
    """
    prefix = cache.make_key("online:")
    return sorted(k[len(prefix) :] for k in cache.plug.cache if k.startswith(prefix))
