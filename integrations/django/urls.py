"""URLs of the dashboard and the metrics, off until their settings turn them on.

.. code-block:: python

    urlpatterns = [..., path("_cacheplug/", include("cacheplug.integrations.django.urls"))]

gives ``/_cacheplug/`` (the page), ``/_cacheplug/api/stats`` (its JSON) and
``/_cacheplug/metrics`` (Prometheus). Each answers 404 unless ``CACHEPLUG_DASHBOARD`` /
``CACHEPLUG_METRICS`` has ``"ENABLED": True``. The names are in the ``cacheplug``
namespace: ``reverse("cacheplug:dashboard")``.
"""

from django.urls import path

from .views import dashboard_page, dashboard_stats, metrics_view

app_name = "cacheplug"

urlpatterns = [
    path("", dashboard_page, name="dashboard"),
    path("api/stats", dashboard_stats, name="dashboard-stats"),
    path("metrics", metrics_view, name="metrics"),
]
