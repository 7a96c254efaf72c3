from catalog import views
from django.urls import include, path

urlpatterns = [
    path("", views.product_list, name="product-list"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("products/<int:pk>/price/", views.set_price, name="product-price"),
    path("recent/", views.recent, name="recent"),
    path("online/", views.online, name="online"),
    path("login/", views.login_view, name="login"),
    path("stats/", views.stats, name="stats"),
    # The dashboard (/_cacheplug/) and Prometheus metrics (/_cacheplug/metrics): they
    # answer 404 unless CACHEPLUG_DASHBOARD / CACHEPLUG_METRICS enable them.
    path("_cacheplug/", include("cacheplug.integrations.django.urls")),
]
