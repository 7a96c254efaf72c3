"""Settings of the test project. Caches are cacheplug and LocMem side by side.

``CACHEPLUG_AUTOSTART = False``: the test session must not start cacheplug threads when
pytest-django sets Django up; tests that need a started plug start and close it.
"""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "cacheplug-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "cacheplug.integrations.django",
]

MIDDLEWARE = [
    "cacheplug.integrations.django.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

CACHES = {
    "default": {
        "BACKEND": "cacheplug.integrations.django.CachePlugCache",
        "LOCATION": "tests-default",
        "OPTIONS": {"MAX_ENTRIES": 10_000, "SWEEP_INTERVAL": 0},
    },
    "locmem": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "tests-locmem",
    },
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {"builtins": ["django.templatetags.cache"]},
    }
]

CACHEPLUG_AUTOSTART = False
CACHEPLUG_REQUEST_ID_HEADER = "X-Request-ID"
