"""Normalized header forms and the ASGI / WSGI converters into them.

Names are lowercase ``str``; values are ``str`` decoded as latin-1 (never fails, and
round-trips to ASGI bytes unchanged). See the package docstring for the full contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = (
    "X_CACHE",
    "X_CACHE_BYPASS",
    "X_CACHE_HIT",
    "X_CACHE_MISS",
    "X_CACHE_STALE",
    "EnvironHeaders",
    "Headers",
    "RawHeaders",
    "decode_asgi_headers",
    "encode_asgi_headers",
    "environ_key",
    "request_header_map",
    "request_headers_from_asgi",
    "request_headers_from_environ",
)

Headers = list[tuple[str, str]]
RawHeaders = list[tuple[bytes, bytes]]

#: Response header that reports what the cache did.
X_CACHE = "x-cache"
X_CACHE_HIT = "HIT"
X_CACHE_MISS = "MISS"
X_CACHE_BYPASS = "BYPASS"
#: A response served stale under RFC 5861 (stale-while-revalidate / stale-if-error).
X_CACHE_STALE = "STALE"


def decode_asgi_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Convert ASGI ``[(b"Name", b"value")]`` to the normalized ``[("name", "value")]``.

    Names are lowercased; both halves are decoded as latin-1, which never fails.
    """
    return [(n.lower().decode("latin-1"), v.decode("latin-1")) for n, v in raw]


def encode_asgi_headers(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    """Convert normalized ``[("name", "value")]`` pairs back to ASGI bytes (latin-1).

    :raises UnicodeEncodeError: a value holds a character above U+00FF, which cannot
        appear in an HTTP header; values produced by this module never do.
    """
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


def request_header_map(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> dict[str, str]:
    """Build the request-header mapping from ``(name, value)`` pairs of str or bytes.

    Names are lowercased, bytes decoded as latin-1, surrounding whitespace stripped, and
    repeated fields joined with ``", "`` (``"; "`` for ``cookie``, RFC 9113 §8.2.3).
    """
    out: dict[str, str] = {}
    for name, value in pairs:
        n = name.lower().decode("latin-1") if isinstance(name, bytes) else name.lower()
        v = (value.decode("latin-1") if isinstance(value, bytes) else value).strip(" \t")
        prev = out.get(n)
        if prev is None:
            out[n] = v
        else:
            out[n] = prev + ("; " if n == "cookie" else ", ") + v
    return out


#: Parsed request headers per exact ASGI header tuple: a client sends the same set again
#: and again (keep-alive, a browser session), so parsing is one hash and a dict copy.
_ASGI_MEMO: dict[tuple[tuple[bytes, bytes], ...], dict[str, str]] = {}
_ASGI_MEMO_MAX = 256
#: Larger header sets (big cookies) are parsed afresh: the memo stays small.
_ASGI_MEMO_BYTES = 4096


def request_headers_from_asgi(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Build the request-header mapping from an ASGI scope's ``headers`` list.

    Returns a new dict on every call (the caller may change it).
    """
    key = tuple(raw)
    try:
        parsed = _ASGI_MEMO.get(key)
    except TypeError:  # pairs given as lists (valid ASGI): unhashable, parse afresh
        return _parse_asgi(key)[0]
    if parsed is None:
        parsed, size = _parse_asgi(key)
        if size <= _ASGI_MEMO_BYTES:
            if len(_ASGI_MEMO) >= _ASGI_MEMO_MAX:
                _ASGI_MEMO.clear()
            _ASGI_MEMO[key] = parsed
    return parsed.copy()


def _parse_asgi(raw: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], int]:
    """The mapping of :func:`request_headers_from_asgi`, and the bytes it was built from."""
    out: dict[str, str] = {}
    size = 0
    for name, value in raw:
        size += len(name) + len(value)
        n = name.lower().decode("latin-1")
        v = value.decode("latin-1").strip(" \t")
        prev = out.get(n)
        out[n] = v if prev is None else prev + ("; " if n == "cookie" else ", ") + v
    return out, size


def request_headers_from_environ(environ: Mapping[str, object]) -> dict[str, str]:
    """Build the request-header mapping from a WSGI environ or Django's ``request.META``.

    ``HTTP_ACCEPT_ENCODING`` becomes ``accept-encoding``; ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH`` are included. PEP 3333 values are already latin-1 ``str``; anything
    that is not a ``str`` is skipped.
    """
    out: dict[str, str] = {}
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").lower()] = value.strip(" \t")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            out[key.replace("_", "-").lower()] = value.strip(" \t")
    return out


_ENVIRON_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_BODY_HEADERS = ("content-type", "content-length")
_MISSING: Any = object()


def environ_key(name: str) -> str:
    """The WSGI environ (and Django ``request.META``) key of a request header name.

    ``"accept-encoding"`` -> ``"HTTP_ACCEPT_ENCODING"``; ``content-type`` and
    ``content-length`` -> ``CONTENT_TYPE`` / ``CONTENT_LENGTH`` (PEP 3333). Memoized:
    few names recur.
    """
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 1024:
            _ENVIRON_KEYS[name] = key
    return key


class EnvironHeaders(Mapping[str, str]):
    """A WSGI environ or Django ``request.META`` read as the request-header mapping.

    The same names and values as :func:`request_headers_from_environ`, but nothing is
    copied: a lookup reads one environ key, which keeps the adapters' hit paths cheap.
    Read-only; an empty ``Content-Type``/``Content-Length`` counts as absent.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]  # hot path
        value = self._environ.get(environ_key(name)) if type(name) is str else None
        if type(value) is not str or (not value and name in _BODY_HEADERS):
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
        return iter(request_headers_from_environ(self._environ))

    def __len__(self) -> int:
        return len(request_headers_from_environ(self._environ))
