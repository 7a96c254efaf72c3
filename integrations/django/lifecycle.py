"""One :class:`cacheplug.CachePlug` per ``LOCATION``, started once per process, closed at exit.

Django builds a cache backend per thread (``caches`` is thread-local), so the backend
instances only look up the shared plug here. :func:`start_all` runs from the app
config's ``ready()`` (or from a server hook); :func:`close_all` runs at interpreter exit
(``atexit``) and from gunicorn's ``worker_exit`` hook. Both are idempotent.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import Any

from cacheplug import CachePlug

__all__ = ("close_all", "plug_for", "plugs", "should_autostart", "start_all")

logger = logging.getLogger("cacheplug.integrations.django")

_lock = threading.Lock()
_plugs: dict[str, CachePlug] = {}
_atexit_registered = False
#: Management commands that serve requests, so they load state and run the worker.
SERVER_COMMANDS = frozenset({"runserver", "runserver_plus", "testserver", "daphne", "runworker"})


def plug_for(location: str, plug_options: dict[str, Any]) -> CachePlug:
    """Return the plug of ``location``, building it (not started) on first use.

    Aliases that share a ``LOCATION`` share the plug; the first alias's options build it
    (the ``cacheplug.E005`` check reports aliases that disagree). A closed plug is
    replaced by a new, empty one.
    """
    plug = _plugs.get(location)
    # CachePlug has no public "closed" flag; close() always closes its worker, and a
    # closed worker never reopens, so that public property is the test.
    if plug is not None and not plug.worker.closed:
        return plug
    with _lock:
        plug = _plugs.get(location)
        if plug is None or plug.worker.closed:
            plug = CachePlug(**plug_options)
            _plugs[location] = plug
        return plug


def plugs() -> dict[str, CachePlug]:
    """The plugs built so far in this process, by ``LOCATION`` (a copy)."""
    with _lock:
        return dict(_plugs)


def should_autostart(argv: list[str] | None = None, environ: Any = None) -> bool:
    """Whether ``ready()`` should start the plugs in this process.

    True for servers (gunicorn, uvicorn, daphne, mod_wsgi: anything that is not
    ``manage.py``), for ``manage.py runserver`` only in the autoreloader's child
    (``RUN_MAIN=true``) or with ``--noreload``, and never for other management commands,
    which must not hold the state lock: ``manage.py cacheplug`` opens it itself, briefly.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    program = os.path.basename(argv[0]) if argv else ""
    if program not in ("manage.py", "django-admin", "django-admin.py", "__main__.py"):
        return True
    command = argv[1] if len(argv) > 1 else ""
    if command not in SERVER_COMMANDS:
        return False
    if command == "runserver" and "--noreload" not in argv:
        return environ.get("RUN_MAIN") == "true"
    return True


def start_all(aliases: list[str] | None = None) -> list[CachePlug]:
    """Build and start the plug of every CachePlugCache alias (load state, start the worker).

    Idempotent; registers :func:`close_all` with ``atexit`` once.

    :param aliases: the ``CACHES`` aliases to start; default every CachePlugCache alias.
    :raises django.core.exceptions.ImproperlyConfigured: an alias's OPTIONS are invalid.
    """
    global _atexit_registered
    from django.core.cache import caches

    from .backend import CachePlugCache

    started = []
    for alias in cacheplug_aliases() if aliases is None else aliases:
        backend = caches[alias]
        if not isinstance(backend, CachePlugCache):
            continue
        started.append(backend.plug.start())
    with _lock:
        if not _atexit_registered:
            atexit.register(close_all)
            _atexit_registered = True
    return started


def close_all(timeout: float = 10.0) -> None:
    """Drain, save and stop every plug of this process; safe to call twice.

    Called at interpreter exit; call it from gunicorn's ``worker_exit`` hook too.
    """
    with _lock:
        current = list(_plugs.values())
    for plug in current:
        try:
            plug.close(timeout)
        except Exception:  # one broken plug must not keep the others from saving
            logger.exception("cacheplug %r failed to close", plug.name)


def cacheplug_aliases() -> list[str]:
    """The ``CACHES`` aliases whose BACKEND is CachePlugCache or a subclass of it."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from .backend import CachePlugCache

    found = []
    for alias, params in settings.CACHES.items():
        try:
            backend_cls = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue
        if isinstance(backend_cls, type) and issubclass(backend_cls, CachePlugCache):
            found.append(alias)
    return found
