"""The primary key's parts (normalized authority, sorted query) and the Vary key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

__all__ = ("vary_key",)

#: Characters of a lowercased reg-name / IPv4 address and of an IPv6 literal.
_HOSTNAME_DELETE = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz0123456789.-_~!$&'()*+;=%")
_IPV6_DELETE = str.maketrans("", "", "0123456789abcdef:.")


@lru_cache(maxsize=512)
def _normalize_authority(scheme: str, host: str) -> str | None:
    """``"HTTPS", "Example.COM:443"`` -> ``"https://example.com"``; None if unusable.

    A host is kept only if it is a reg-name, IPv4 or bracketed IPv6 literal with an
    optional numeric port, so no ``/``, ``?``, ``@`` or space can shift the key's parts.
    """
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        return None
    host = host.strip(" \t").lower()
    if not host or not host.isascii():
        return None
    if host.startswith("["):
        close = host.find("]")
        if close < 3:
            return None
        name, rest = host[: close + 1], host[close + 1 :]
        if rest and (rest[0] != ":" or not rest[1:].isdigit()):
            return None
        port = rest[1:]
        if name[1:-1].translate(_IPV6_DELETE):
            return None
    else:
        name, sep, port = host.partition(":")
        if sep and not port.isdigit():
            return None
        if not name or name.translate(_HOSTNAME_DELETE):
            return None
    if port and (scheme, port.lstrip("0")) in (("http", "80"), ("https", "443")):
        port = ""
    return f"{scheme}://{name}:{port}" if port else f"{scheme}://{name}"


def _param_name(param: str) -> str:
    return param.partition("=")[0]


_QUERY_MEMO: dict[str, str] = {}


def _sorted_query(query: str) -> str:
    """Sort ``a=1&b=2`` parameters by name (stable: repeated names keep their order).

    Empty parameters are dropped. Short queries are memoized (bounded) for the hit path.
    """
    if "&" not in query:
        return query
    done = _QUERY_MEMO.get(query)
    if done is not None:
        return done
    params = [p for p in query.split("&") if p]
    params.sort(key=_param_name)
    done = "&".join(params)
    if len(query) <= 512:
        if len(_QUERY_MEMO) >= 1024:
            _QUERY_MEMO.clear()
        _QUERY_MEMO[query] = done
    return done


def vary_key(
    vary_names: Sequence[str], request_headers: Mapping[str, str]
) -> tuple[str | None, ...]:
    """The secondary key: the request's value for each Vary name (``None`` if absent).

    ``vary_names`` are lowercase (as :func:`parse_vary` returns them); values are taken
    as the request-header mapping holds them (repeats already joined, whitespace
    stripped), so ``gzip`` and ``identity`` give different keys.
    """
    return tuple([request_headers.get(name) for name in vary_names])
