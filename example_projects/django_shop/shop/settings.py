"""Settings of the django_shop example: SQLite by default, PostgreSQL with DATABASE_URL."""

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-shop-example-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "cacheplug.integrations.django",
    "catalog",
]

MIDDLEWARE = [
    "cacheplug.integrations.django.CacheMiddleware",  # first: a hit skips everything
    "cacheplug.integrations.django.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]


def _database(url: str | None) -> dict:
    if not url:
        name = os.environ.get("DJANGO_SHOP_DB") or BASE_DIR / "db.sqlite3"
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
    parts = urlsplit(url)  # postgresql://user:password@host:5432/name (needs psycopg)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}

CACHES = {
    "default": {
        "BACKEND": "cacheplug.integrations.django.CachePlugCache",
        "LOCATION": "shop",
        "TIMEOUT": 300,
        "OPTIONS": {
            "MAX_ENTRIES": 100_000,
            "SHARDS": 16,
            # Survives restarts; signed with SECRET_KEY.
            "STATE_DIR": os.environ.get("DJANGO_SHOP_STATE_DIR") or BASE_DIR / ".cacheplug",
            "FSYNC": "everysec",
            "REDIS_URL": None,
        },
    }
}

CACHEPLUG_REQUEST_ID_HEADER = "X-Request-ID"
CACHEPLUG_PAGE_CACHE = {"DEFAULT_TTL": 30}

# /_cacheplug/ (dashboard) and /_cacheplug/metrics (Prometheus), see shop/urls.py. The
# dashboard answers loopback clients without proxy headers, or anyone presenting
# $CACHEPLUG_DASHBOARD_TOKEN; set "ENABLED": False to turn it off.
CACHEPLUG_DASHBOARD = {"ENABLED": True}
CACHEPLUG_METRICS = {"ENABLED": True}

#: A user is "online" for this many seconds after their last request.
SHOP_ONLINE_SECONDS = int(os.environ.get("SHOP_ONLINE_SECONDS", "300"))
