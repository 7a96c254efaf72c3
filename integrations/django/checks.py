"""Django system checks for CachePlugCache aliases (``manage.py check``).

* ``cacheplug.E001``: ``STATE_DIR`` cannot be created or written.
* ``cacheplug.E002``: persistence is on but there is no secret (``OPTIONS["SECRET"]``,
  ``SECRET_KEY`` or ``$CACHEPLUG_SECRET``).
* ``cacheplug.E003``: an unknown option name in ``OPTIONS``.
* ``cacheplug.E004``: an option value that cacheplug rejects.
* ``cacheplug.E005``: aliases sharing a ``LOCATION`` (and so one store) disagree on
  store options.
* ``cacheplug.E006``: ``CACHEPLUG_DASHBOARD`` or ``CACHEPLUG_METRICS`` is invalid (an
  unknown key, a short token, an alias that is not a CachePlugCache).
* ``cacheplug.W001``: ``REDIS_URL`` is set but nothing answers there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from cacheplug import CachePlug

from .lifecycle import cacheplug_aliases
from .options import default_secret, parse

__all__ = ("check_caches", "check_dashboard_and_metrics")

#: Seconds the REDIS_URL probe waits for a TCP connection.
REDIS_PROBE_TIMEOUT = 0.5


@register(Tags.caches)
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check every CachePlugCache alias in ``settings.CACHES``."""
    messages: list[CheckMessage] = []
    by_location: dict[str, tuple[str, dict[str, Any]]] = {}
    secret_key = default_secret()
    for alias in cacheplug_aliases():
        params = settings.CACHES[alias]
        location = params.get("LOCATION", "")
        obj = f"CACHES[{alias!r}]"
        try:
            parsed = parse(location, params, secret_key)
        except ImproperlyConfigured as exc:
            code = "cacheplug.E003" if "unknown" in str(exc) else "cacheplug.E004"
            messages.append(Error(str(exc), obj=obj, id=code))
            continue
        options = parsed.plug_options
        messages += _check_values(options, obj)
        state_dir = options.get("state_dir")
        if state_dir is not None:
            messages += _check_state_dir(Path(state_dir), obj)
            if not options.get("secret") and not os.environ.get("CACHEPLUG_SECRET"):
                messages.append(
                    Error(
                        "STATE_DIR is set but there is no secret to sign the saved state",
                        hint="set SECRET_KEY, OPTIONS['SECRET'] or $CACHEPLUG_SECRET",
                        obj=obj,
                        id="cacheplug.E002",
                    )
                )
        if options.get("redis_url"):
            messages += _check_redis(str(options["redis_url"]), obj)
        shared = {k: v for k, v in options.items() if k != "name"}
        if location in by_location and by_location[location][1] != shared:
            other = by_location[location][0]
            messages.append(
                Error(
                    f"aliases {other!r} and {alias!r} share LOCATION {location!r}, so one "
                    "store, but set different store OPTIONS; the first one built wins",
                    hint="give them the same OPTIONS (MAX_ENTRIES/CULL_FREQUENCY may differ) "
                    "or different LOCATIONs",
                    obj=obj,
                    id="cacheplug.E005",
                )
            )
        by_location.setdefault(location, (alias, shared))
    return messages


@register(Tags.caches)
def check_dashboard_and_metrics(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check ``CACHEPLUG_DASHBOARD`` and ``CACHEPLUG_METRICS`` (cacheplug.E006)."""
    from .views import dashboard_settings, metrics_settings

    messages: list[CheckMessage] = []
    aliases = set(cacheplug_aliases())
    for name, parse_settings in (
        ("CACHEPLUG_DASHBOARD", dashboard_settings),
        ("CACHEPLUG_METRICS", metrics_settings),
    ):
        try:
            conf = parse_settings()
        except (ImproperlyConfigured, ImportError) as exc:
            messages.append(Error(str(exc), obj=name, id="cacheplug.E006"))
            continue
        if not conf.enabled:
            continue
        wanted = [conf.alias] if name == "CACHEPLUG_DASHBOARD" else list(conf.aliases or ())
        if name == "CACHEPLUG_METRICS" and conf.aliases is None and not aliases:
            wanted = ["(none)"]
        for alias in wanted:
            if alias not in aliases:
                messages.append(
                    Error(
                        f"{name} needs {alias!r} to be a CACHES alias with BACKEND "
                        "cacheplug.integrations.django.CachePlugCache",
                        obj=name,
                        id="cacheplug.E006",
                    )
                )
    return messages


def _check_values(options: dict[str, Any], obj: str) -> list[CheckMessage]:
    # Build (never start) a plug: it validates every option; the Redis URL is probed
    # separately, as a warning.
    try:
        CachePlug(**{**options, "redis_url": None})
    except (TypeError, ValueError) as exc:
        return [Error(f"invalid cacheplug option: {exc}", obj=obj, id="cacheplug.E004")]
    return []


def _check_state_dir(state_dir: Path, obj: str) -> list[CheckMessage]:
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return []
    return [
        Error(
            f"STATE_DIR {str(state_dir)!r} is not writable (checked {str(existing)!r})",
            hint="create it and give the server's user write access, or set STATE_DIR None",
            obj=obj,
            id="cacheplug.E001",
        )
    ]


def _check_redis(url: str, obj: str) -> list[CheckMessage]:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        target: Any = parts.path
        family = socket.AF_UNIX
    else:
        target = (parts.hostname or "localhost", parts.port or 6379)
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(REDIS_PROBE_TIMEOUT)
            sock.connect(target)
    except OSError as exc:
        return [
            Warning(
                f"REDIS_URL {url!r} is unreachable ({exc}); the cache runs local-only "
                "until it answers",
                obj=obj,
                id="cacheplug.W001",
            )
        ]
    return []
