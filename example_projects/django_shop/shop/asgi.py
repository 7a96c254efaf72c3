"""ASGI entry point: ``uvicorn shop.asgi:application``. The plug starts in ready() and
saves at exit (atexit), which uvicorn and daphne reach on a normal shutdown."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
application = get_asgi_application()
