"""The cacheplug Flask adapter: ``FlaskCachePlug`` and a Flask-Caching backend.

``FlaskCachePlug`` (also importable as ``CachePlug``) is the extension; ``CachelibCache``
is a ``cachelib.BaseCache`` on cacheplug, and ``flask_caching_backend`` the factory to
name in Flask-Caching's ``CACHE_TYPE``. See ``docs/flask.md``.
"""

try:
    import flask as _flask  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cacheplug.integrations.flask needs Flask: pip install 'cacheplug[flask]'"
    ) from exc

from .cachelib_backend import CachelibCache, flask_caching_backend
from .extension import FlaskCachePlug, FlaskPlugState

#: The name DESIGN.md uses: ``from cacheplug.integrations.flask import CachePlug``.
CachePlug = FlaskCachePlug

__all__ = (
    "CachePlug",
    "CachelibCache",
    "FlaskCachePlug",
    "FlaskPlugState",
    "flask_caching_backend",
)
