"""Views: a page-cached list, a detail cached through the backend, live stats."""

from django.core.cache import cache
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_page, never_cache

from cacheplug import request_cached, request_context

from .models import Product


@request_cached
def product_count() -> int:
    """Counted once per request however many times the view and template ask."""
    return Product.objects.count()


def product_list(request):
    # CacheMiddleware stores this page (Cache-Control: max-age) and serves the next hits.
    products = cache.get_or_set("products:all", lambda: list(Product.objects.values()), 60)
    request_context.set("page", "list")
    response = render(request, "catalog/list.html", {"products": products})
    response["Cache-Control"] = "public, max-age=30"
    return response


@cache_page(60)  # Django's own decorator works on CachePlugCache too
def product_detail(request, pk: int):
    product = cache.get_or_set(f"product:{pk}", lambda: Product.objects.filter(pk=pk).first())
    if product is None:
        raise Http404("no such product")
    return render(request, "catalog/detail.html", {"product": product})


@never_cache  # live numbers: the page cache must not keep them
def stats(request):
    stats = cache.plug.stats().cache
    return JsonResponse(
        {
            "request_id": request_context.request_id,
            "size": stats.size,
            "hits": stats.hits,
            "misses": stats.misses,
            "products": product_count(),
        }
    )
