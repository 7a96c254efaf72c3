"""The app config: registers the system checks and starts the plugs once per process."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings

from . import lifecycle


class CachePlugConfig(AppConfig):
    """``INSTALLED_APPS`` entry ``"cacheplug.integrations.django"``.

    ``ready()`` registers the ``cacheplug.*`` system checks and, when
    ``CACHEPLUG_AUTOSTART`` allows it, starts every CachePlugCache alias's plug (load
    saved state, start the worker) and registers the save-and-stop at exit.

    ``CACHEPLUG_AUTOSTART``: ``None`` (default, automatic: servers yes, ``runserver`` only
    in its autoreloader child, other management commands no), ``True`` or ``False``.
    """

    name = "cacheplug.integrations.django"
    label = "cacheplug"
    verbose_name = "cacheplug"
    default = True

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)

        autostart = getattr(settings, "CACHEPLUG_AUTOSTART", None)
        if autostart is None:
            autostart = lifecycle.should_autostart()
        if autostart:
            lifecycle.start_all()
