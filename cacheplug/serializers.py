"""Codecs for persisted values, the keys that sign state files, and their errors.

A :class:`Serializer` turns a whole batch (a list of plain tuples) into bytes in one call,
so saving a million entries costs one ``pickle.dumps``, not a million. Signing keys are
derived from one application secret with HKDF-SHA256 (RFC 5869), one key per file kind,
so a WAL record can never pass for a snapshot.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from cacheplug.errors import CachePlugError

__all__ = (
    "ATOMS",
    "MissingSecretError",
    "PickleSerializer",
    "Serializer",
    "StateFileError",
    "StateKeys",
    "StateStoreClosedError",
    "TamperedStateError",
    "UnsupportedFormatError",
    "derive_keys",
    "dump_rows",
)

MAC_SIZE = 32

#: Types whose instances hold no references to other objects: data made only of these
#: (inside lists and tuples) can have no shared or cyclic parts.
ATOMS: frozenset[type] = frozenset((str, bytes, int, float, complex, bool, type(None)))


class StateFileError(CachePlugError, ValueError):
    """A state file cannot be used: it is missing a part, foreign, or unreadable."""


class TamperedStateError(StateFileError):
    """A state file's HMAC does not verify: it was altered or signed with another secret."""


class UnsupportedFormatError(StateFileError):
    """A state file was written by a newer format version; the message names both."""


class MissingSecretError(CachePlugError, RuntimeError):
    """Persistence was enabled without a secret to sign and verify the state files."""

    def __init__(self) -> None:
        super().__init__(
            "cacheplug persistence needs a secret to sign its state files, and none was "
            "given: pass secret=... to StateStore/CachePlug, or set the CACHEPLUG_SECRET "
            "environment variable; the Django and Flask adapters use settings.SECRET_KEY / "
            "app.config['SECRET_KEY'] when set. Unsigned pickles are never loaded."
        )


class StateStoreClosedError(CachePlugError, RuntimeError):
    """A write was attempted on a :class:`~cacheplug.persistence.StateStore` after close()."""


@runtime_checkable
class Serializer(Protocol):
    """Turns a batch of plain tuples into bytes and back; ``loads(dumps(x)) == x``."""

    def dumps(self, obj: Any) -> bytes:
        """Encode *obj*; raise any exception if it cannot be encoded."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`dumps`."""
        ...


class PickleSerializer:
    """The default codec: :mod:`pickle` with protocol 5.

    Only ever fed bytes whose HMAC has been verified, because unpickling runs code.

    :param protocol: the pickle protocol, 2 to :data:`pickle.HIGHEST_PROTOCOL`.
    :raises ValueError: if *protocol* is out of range.
    """

    __slots__ = ("protocol",)

    def __init__(self, protocol: int = 5) -> None:
        if not 2 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(
                f"pickle protocol must be 2..{pickle.HIGHEST_PROTOCOL}, got {protocol!r}"
            )
        self.protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        """Pickle *obj* with the configured protocol."""
        return pickle.dumps(obj, protocol=self.protocol)

    def loads(self, data: bytes) -> Any:
        """Unpickle *data*; call only on authenticated bytes."""
        return pickle.loads(data)

    def dumps_atoms(self, obj: Any) -> bytes:
        """Pickle *obj* without the memo; :meth:`loads` reads the result.

        Only for lists and tuples of :data:`ATOMS`: with nothing shared or cyclic the
        memo (pickle's table of every object already written) has nothing to do, and
        skipping it makes encoding a batch of small records about 30% faster.

        :raises ValueError: if *obj* turns out to be cyclic (use :meth:`dumps`).
        """
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, self.protocol)
        pickler.fast = True  # no memo (documented as deprecated, still supported)
        pickler.dump(obj)
        return buf.getvalue()

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self.protocol})"


class StateKeys(NamedTuple):
    """The keys derived from one secret: one per file kind, plus a public key id."""

    snapshot: bytes
    wal: bytes
    #: 8 bytes written into file headers so a mismatch reads "other secret", not "tampered".
    key_id: bytes


def _hkdf_expand(prk: bytes, info: bytes) -> bytes:
    # One HKDF-Expand block (L = 32) is all each key needs.
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def derive_keys(secret: str | bytes) -> StateKeys:
    """Derive the snapshot key, the WAL key and the key id from *secret* (HKDF-SHA256).

    :param secret: the application secret; ``str`` is encoded as UTF-8.
    :raises MissingSecretError: if *secret* is empty.
    """
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise MissingSecretError
    prk = hmac.new(b"cacheplug-state-v1", raw, hashlib.sha256).digest()
    return StateKeys(
        snapshot=_hkdf_expand(prk, b"snapshot"),
        wal=_hkdf_expand(prk, b"wal"),
        key_id=_hkdf_expand(prk, b"key-id")[:8],
    )


Row = tuple[Any, ...]


def dump_rows(
    serializer: Serializer,
    rows: list[Row],
    *,
    key_at: int,
    on_error: Callable[[object, Exception], None],
    fallback: Callable[[Row], Row | None] | None = None,
) -> tuple[bytes, list[Row]]:
    """Serialize *rows* in one call; if that fails, leave out the rows that cannot be.

    The common case costs one ``dumps``. When it fails, each row is tried alone; a bad
    row is reported through ``on_error(row[key_at], exc)`` and replaced by
    ``fallback(row)`` (dropped when that is None or cannot be serialized either).

    :returns: the bytes and the rows they hold.
    """
    try:
        return serializer.dumps(rows), rows
    except Exception:
        pass  # find the culprits one by one; the common path pays nothing for this
    good: list[Row] = []
    for row in rows:
        try:
            serializer.dumps(row)
        except Exception as exc:
            on_error(row[key_at], exc)
            replacement = fallback(row) if fallback is not None else None
            if replacement is None:
                continue
            try:
                serializer.dumps(replacement)
            except Exception:
                continue  # even the key cannot be saved, so no older value of it is
            row = replacement
        good.append(row)
    return serializer.dumps(good), good
