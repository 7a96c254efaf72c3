"""URLs of the test project."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("counter/", views.counter),
    path("cookie/", views.cookie),
    path("page/", views.page),
    path("private/", views.private),
    path("vary/", views.vary_lang),
    path("fragment/", views.fragment),
    path("context/", views.context),
    path("whoami/", views.whoami),
    path("session/", views.session_view),
    path("decorated/", views.decorated),
    path("decorated-async/", views.decorated_async),
    path("cache-page/", views.django_cache_page),
    path("cache-page-locmem/", views.django_cache_page_locmem),
    path("stream/", views.stream),
    path("item/", views.item),
    path("_cacheplug/", include("cacheplug.integrations.django.urls")),
]
