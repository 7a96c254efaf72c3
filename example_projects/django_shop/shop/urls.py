from catalog import views
from django.urls import path

urlpatterns = [
    path("", views.product_list, name="product-list"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("stats/", views.stats, name="stats"),
]
