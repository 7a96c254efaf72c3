"""Views: a page-cached catalogue, per-user pages, who is online, live stats."""

from django.contrib.auth import authenticate, login
from django.core.cache import cache
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST

from cacheplug import request_context

from . import data
from .models import Product


def product_list(request):
    """Shared by everyone: CacheMiddleware stores the page (public, max-age) and serves
    the next requests without running this view; the data comes from the tagged store."""
    request_context.set("page", "list")
    response = render(request, "catalog/list.html", {"products": data.catalog()})
    response["Cache-Control"] = "public, max-age=30"
    return response


@never_cache  # per user (recently viewed): never stored by the page cache
def product_detail(request, pk: int):
    item = data.product(pk)
    if item is None:
        raise Http404("no such product")
    data.mark_online()
    context = {
        "product": item,
        # The template calls this again: @request_cached reads the cache once.
        "recently_viewed": data.recently_viewed,
        "request_id": request_context.request_id,
    }
    response = render(request, "catalog/detail.html", context)
    data.remember_view(pk)
    return response


@never_cache
def recent(request):
    """The current user's recently viewed products, newest first."""
    data.mark_online()
    ids = data.recently_viewed()
    return JsonResponse(
        {
            "user": request.user.get_username() or None,
            "recent": list(ids),
            "names": [item.name for pk in ids if (item := data.product(pk)) is not None],
        }
    )


@never_cache
def online(request):
    """Who was active in the last SHOP_ONLINE_SECONDS."""
    data.mark_online()
    return JsonResponse({"online": data.online_users()})


@require_POST
def set_price(request, pk: int):
    """Change a price (logged-in users); the post_save receiver invalidates the caches."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=403)
    product = get_object_or_404(Product, pk=pk)
    try:
        product.price_cents = int(request.POST["price_cents"])
    except (KeyError, ValueError):
        return JsonResponse({"error": "price_cents must be an integer"}, status=400)
    product.save()
    return JsonResponse({"id": product.pk, "price_cents": product.price_cents})


@never_cache
@ensure_csrf_cookie
def login_view(request):
    """GET: a CSRF cookie and a form; POST username/password: a session."""
    if request.method == "POST":
        user = authenticate(
            request, username=request.POST.get("username"), password=request.POST.get("password")
        )
        if user is None:
            return JsonResponse({"error": "wrong username or password"}, status=403)
        login(request, user)
        return JsonResponse({"user": user.get_username()})
    return HttpResponse(
        '<form method="post">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
        '<input name="username"> <input name="password" type="password">'
        "<button>log in</button></form>"
    )


@never_cache  # live numbers: the page cache must not keep them
def stats(request):
    stats = cache.plug.stats().cache
    return JsonResponse(
        {
            "request_id": request_context.request_id,
            "started": cache.plug.started,
            "size": stats.size,
            "hits": stats.hits,
            "misses": stats.misses,
            "loads": dict(data.LOADS),
        }
    )
