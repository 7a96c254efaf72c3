"""``request.META`` read as the HTTP policy's request-header mapping."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cacheplug.http import request_headers_from_environ

__all__ = ("MetaHeaders",)

_MISSING: Any = object()
_META_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def _meta_key(name: str) -> str:
    key = _META_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_META_KEYS) < 1024:
            _META_KEYS[name] = key
    return key


class MetaHeaders(Mapping[str, str]):
    """``request.META`` seen as the policy's request-header mapping, read lazily.

    The same names and values as :func:`cacheplug.http.request_headers_from_environ`, but
    only the few headers the policy asks for are ever looked at.
    """

    __slots__ = ("_meta",)

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self._meta = meta

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._meta.get(_meta_key(name)) if type(name) is str else None
        if type(value) is not str or (not value and name in ("content-type", "content-length")):
            return default
        return value.strip(" \t")

    def __getitem__(self, name: str) -> str:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return self.get(name, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(request_headers_from_environ(self._meta))

    def __len__(self) -> int:
        return len(request_headers_from_environ(self._meta))
