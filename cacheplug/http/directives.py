"""Parsing of ``Cache-Control``, ``Vary``, ``Pragma``, delta-seconds and HTTP-dates.

Every parser is pure and never raises on header content: malformed input is reported
(``CacheControl.malformed``, ``None``) so the store path can refuse it.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

__all__ = ("CacheControl", "parse_cache_control", "parse_vary")

#: RFC 9111 §1.2.2: a delta-seconds value too large to represent is 2**31.
_DELTA_MAX = 2**31
_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN_DELETE = str.maketrans("", "", _TCHARS)


def _is_token(value: str) -> bool:
    """True if ``value`` is a non-empty RFC 9110 token (no regex: one C-level pass)."""
    return bool(value) and not value.translate(_TOKEN_DELETE)


class CacheControl(dict[str, str | None]):
    """Parsed ``Cache-Control``: lowercase directive name -> argument (``None`` if none).

    Quoted arguments are unquoted. :attr:`malformed` is true when any part could not be
    parsed (bad directive name, unbalanced quote, bad argument, or one directive given
    twice with different arguments); the store path then refuses to store.
    """

    __slots__ = ("malformed",)

    def __init__(self) -> None:
        super().__init__()
        self.malformed = False

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_cache_control, (dict(self), self.malformed))


def _rebuild_cache_control(items: dict[str, str | None], malformed: bool) -> CacheControl:
    cc = CacheControl()
    cc.update(items)
    cc.malformed = malformed
    return cc


def _split_quoted(value: str) -> list[str] | None:
    """Split on commas outside quoted strings; ``None`` if a quote is left open."""
    items: list[str] = []
    start = 0
    in_quote = escaped = False
    for i, ch in enumerate(value):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ",":
            items.append(value[start:i])
            start = i + 1
    if in_quote:
        return None
    items.append(value[start:])
    return items


def _unquote(arg: str) -> str | None:
    """Return the content of a quoted-string, or ``None`` if ``arg`` is not exactly one."""
    out: list[str] = []
    escaped = False
    for ch in arg[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return None
        else:
            out.append(ch)
    if escaped:
        return None
    return "".join(out)


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a ``Cache-Control`` value (repeated fields joined by commas); never raises.

    ``"public, max-age=60, private=\\"Set-Cookie, X\\""`` gives
    ``{"public": None, "max-age": "60", "private": "Set-Cookie, X"}``. Empty items are
    skipped. Quoted and token arguments are both accepted (RFC 9111 §5.2: "recipients
    ought to accept both forms"). Anything else sets :attr:`CacheControl.malformed`.
    """
    cc = CacheControl()
    if not value:
        return cc
    if '"' in value:
        items = _split_quoted(value)
        if items is None:
            cc.malformed = True
            return cc
    else:
        items = value.split(",")
    for item in items:
        name, sep, arg = item.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            if sep or item.strip(" \t"):
                cc.malformed = True
            continue
        if not _is_token(name):
            cc.malformed = True
            continue
        parsed: str | None = None
        if sep:
            arg = arg.strip(" \t")
            if arg[:1] == '"' and len(arg) >= 2 and arg[-1] == '"':
                parsed = _unquote(arg)
            elif _is_token(arg):
                parsed = arg
            if parsed is None:
                cc.malformed = True
                continue
        if name in cc:
            if cc[name] != parsed:
                cc.malformed = True  # RFC 9111 §4.2.1: conflicting duplicates
            continue
        cc[name] = parsed
    return cc


def _has_no_cache(pragma: str) -> bool:
    """True if a ``Pragma`` value lists ``no-cache`` (RFC 9111 §5.4)."""
    return any(p.strip(" \t").lower() == "no-cache" for p in pragma.split(","))


def _delta_seconds(arg: str | None) -> int | None:
    """Parse delta-seconds (RFC 9111 §1.2.2); ``None`` if absent-argument or invalid."""
    if arg is None or not arg.isascii() or not arg.isdigit():
        return None
    digits = arg.lstrip("0")
    if len(digits) > 10:  # also keeps int() clear of the 4300-digit limit
        return _DELTA_MAX
    return min(int(digits or "0"), _DELTA_MAX)


def parse_vary(value: str | None) -> tuple[str, ...] | None:
    """Parse ``Vary`` into sorted, de-duplicated lowercase names; never raises.

    ``()`` for no Vary, ``("*",)`` when ``*`` appears anywhere, ``None`` if an item is not
    a valid field name (the store path then refuses to store).
    """
    if not value:
        return ()
    names: set[str] = set()
    for item in value.split(","):
        name = item.strip(" \t").lower()
        if not name:
            continue
        if name == "*":
            return ("*",)
        if not _is_token(name):
            return None
        names.add(name)
    return tuple(sorted(names))


def _http_date(value: str) -> float | None:
    """Parse an HTTP-date to epoch seconds; ``None`` if invalid."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
