"""WAL frame payloads: a batch of records encoded as six columns in one ``dumps``.

Records arrive laid end to end in one flat list (``op, key, value, expires_at, tags,
version, op, ...``), the way the runtime's cache listener buffers them. A frame's
payload is ``serializer.dumps((ops, keys, values, expiries, tags, versions))``:

- ``ops`` is one str when every record has the same op (the usual "all set"), else a list;
- ``tags`` is ``()`` when no record has tags, else a list of tuples;
- ``keys``, ``values``, ``expiries`` and ``versions`` are lists. (Earlier format-2
  files may hold :mod:`array` columns for the last two; :func:`decode` reads both. Plain
  lists pickle faster than converting to an array first: 16 ns against 36 ns a float.)

Strided slices build the columns at C speed, and the encoder then writes four objects per
record instead of six: no per-record Python code on the write path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain, repeat
from typing import Any

from cacheplug.serializers import ATOMS, Serializer, dump_rows

__all__ = ("FIELDS", "decode", "encode", "encode_atoms")

#: fields per record: op, key, value, expires_at, tags, version
FIELDS = 6

Row = tuple[Any, ...]


def _columns(fields: list[Any], start: int, stop: int) -> list[list[Any]]:
    """The six columns of records ``start .. stop - 1`` of a flat field list."""
    a, b = start * FIELDS, stop * FIELDS
    return [fields[a + k : b : FIELDS] for k in range(FIELDS)]


def _pack(cols: list[list[Any]]) -> tuple[Any, ...]:
    ops, keys, values, exps, tags, versions = cols
    n = len(keys)
    op_col: Any = ops[0] if ops.count(ops[0]) == n else ops
    tag_col: Any = () if tags.count(()) == n else tags
    return (op_col, keys, values, exps, tag_col, versions)


def encode_atoms(
    fields: list[Any], start: int, stop: int, dumps_atoms: Callable[[Any], bytes] | None
) -> bytes | None:
    """Encode records ``start .. stop - 1`` with *dumps_atoms* if every value is an atom.

    :returns: the payload, or None when the batch needs :func:`encode` (a value that is
        not an atom, an unpicklable key or tag, or no *dumps_atoms*).
    """
    if dumps_atoms is None:
        return None
    cols = _columns(fields, start, stop)
    if not ATOMS.issuperset(map(type, cols[2])):
        return None
    try:
        return dumps_atoms(_pack(cols))
    except Exception:
        return None


def encode(
    fields: list[Any],
    start: int,
    stop: int,
    serializer: Serializer,
    *,
    dumps_atoms: Callable[[Any], bytes] | None,
    on_error: Callable[[object, Exception], None],
    fallback: Callable[[Row], Row | None],
) -> tuple[bytes, int]:
    """Encode records ``start .. stop - 1`` of *fields*; return the bytes and their count.

    :param dumps_atoms: the memo-free pickler (:meth:`PickleSerializer.dumps_atoms`), used
        when every value is an atom; None for a custom serializer (plain list columns).
    :param on_error: called as ``on_error(key, exc)`` for a record that cannot be encoded;
        ``fallback(record)`` then replaces it (None drops it).
    """
    cols = _columns(fields, start, stop)
    packed = _pack(cols)
    if dumps_atoms is not None and ATOMS.issuperset(map(type, cols[2])):
        try:
            return dumps_atoms(packed), stop - start
        except Exception:
            pass  # e.g. an unpicklable key: the normal path sorts it out
    try:
        return serializer.dumps(packed), stop - start
    except Exception:
        pass  # find the culprits record by record; the common path pays nothing for this
    rows: list[Row] = list(zip(*cols, strict=True))
    _, good = dump_rows(serializer, rows, key_at=1, on_error=on_error, fallback=fallback)
    if not good:
        return b"", 0
    flat = list(chain.from_iterable(good))
    return serializer.dumps(_pack(_columns(flat, 0, len(good)))), len(good)


def decode(payload: Any, count: int) -> Iterator[Row]:
    """Return an iterator over the *count* records ``(op, key, value, expires_at, tags,
    version)`` of a decoded frame payload.

    :raises ValueError: if the payload does not hold *count* records.
    """
    if not isinstance(payload, tuple | list) or len(payload) != FIELDS:
        raise ValueError(f"the payload is not {FIELDS} columns")
    ops, keys, values, exps, tags, versions = payload
    cols: list[Iterable[Any]] = [
        repeat(ops, count) if isinstance(ops, str) else ops,
        keys,
        values,
        exps,
        repeat((), count) if len(tags) == 0 else tags,
        versions,
    ]
    for col in cols:
        if not isinstance(col, repeat) and len(col) != count:  # type: ignore[arg-type]
            raise ValueError(f"a column holds {len(col)} records, the frame {count}")  # type: ignore[arg-type]
    return zip(*cols, strict=True)
