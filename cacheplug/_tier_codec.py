"""How the Redis tier names keys and signs what it puts in Redis.

Keys: Python's ``hash()`` of a ``str`` differs between processes, so cache keys are
encoded to stable Redis names: a ``str`` keeps its text (readable in ``redis-cli``),
anything else is named by a digest of its pickle (deterministic for the str/int/bytes/
tuple keys caches use). Every name carries the namespace inside a hash tag
(``{prefix}``), so a namespace lives in one Redis Cluster slot and the Lua scripts
may touch several of its keys.

Values and invalidation messages are pickles, and unpickling runs code, so each one is
signed with HMAC-SHA256 under a key derived from the plug's secret and the namespace
(and, for values, bound to the Redis key): a process refuses anything it cannot
verify, before unpickling it, and a value cannot be replayed under another key.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Hashable
from typing import Any

from cacheplug.errors import CachePlugError
from cacheplug.serializers import MAC_SIZE, MissingSecretError, PickleSerializer

__all__ = ("TamperedValueError", "TierCodec")

_MAGIC = b"cp1"


class TamperedValueError(CachePlugError, ValueError):
    """A value or message read from Redis does not carry a valid signature."""


class TierCodec:
    """Encode keys to Redis names, and sign/verify values and messages.

    :param secret: the application secret (``str`` or ``bytes``).
    :param prefix: the namespace; several apps share one Redis with distinct prefixes.
    :raises MissingSecretError: if ``secret`` is empty.
    """

    __slots__ = ("_msg_key", "_serializer", "_value_key", "prefix", "tag")

    def __init__(self, secret: str | bytes, prefix: str) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
        if not raw:
            raise MissingSecretError
        prk = hmac.new(b"cacheplug-redis-tier-v1", raw, hashlib.sha256).digest()
        ns = prefix.encode()
        self._value_key = hmac.new(prk, b"value\x00" + ns, hashlib.sha256).digest()
        self._msg_key = hmac.new(prk, b"message\x00" + ns, hashlib.sha256).digest()
        self._serializer = PickleSerializer()
        self.prefix = prefix
        #: the hash tag every Redis name of this namespace starts with
        self.tag = "{" + prefix + "}"

    # -- names ----------------------------------------------------------------------------

    def name(self, key: Hashable) -> str:
        """The stable Redis-side name of a cache key (without the namespace)."""
        if isinstance(key, str):
            return "s:" + key
        try:
            data = pickle.dumps(key, protocol=5)
        except Exception as exc:
            raise TypeError(
                f"the Redis tier can only share keys that pickle, got {type(key).__name__}"
            ) from exc
        return "p:" + hashlib.blake2b(data, digest_size=16).hexdigest()

    def data_key(self, key: Hashable) -> str:
        """The Redis hash holding ``key``'s value and tag generations."""
        return f"{self.tag}:d:{self.name(key)}"

    def lease_key(self, key: Hashable) -> str:
        """The Redis key of ``key``'s fill lease (distributed single-flight lock)."""
        return f"{self.tag}:l:{self.name(key)}"

    def tag_key(self, tag: Hashable) -> str:
        """The Redis counter holding ``tag``'s generation."""
        return f"{self.tag}:t:{self.name(tag)}"

    @property
    def channel(self) -> str:
        """The pub/sub channel that carries this namespace's invalidations."""
        return f"{self.tag}:invalidate"

    # -- values ---------------------------------------------------------------------------

    def dump_value(self, data_key: str, value: Any, tags: tuple[Hashable, ...]) -> bytes:
        """Sign ``(value, tags)`` for storing under ``data_key``."""
        payload = self._serializer.dumps((value, tags))
        mac = hmac.new(self._value_key, data_key.encode() + b"\x00" + payload, hashlib.sha256)
        return _MAGIC + mac.digest() + payload

    def load_value(self, data_key: str, blob: bytes) -> tuple[Any, tuple[Hashable, ...]]:
        """Verify and decode a blob read from ``data_key``.

        :raises TamperedValueError: if the signature does not verify (nothing is unpickled).
        """
        payload = self._verify(self._value_key, blob, data_key.encode() + b"\x00")
        value, tags = self._serializer.loads(payload)
        return value, tuple(tags)

    # -- messages -------------------------------------------------------------------------

    def dump_message(self, origin: str, ops: list[tuple[Any, ...]]) -> bytes:
        """Sign an invalidation message: the origin process id and its operations."""
        payload = self._serializer.dumps((origin, ops))
        mac = hmac.new(self._msg_key, payload, hashlib.sha256)
        return _MAGIC + mac.digest() + payload

    def load_message(self, blob: bytes) -> tuple[str, list[tuple[Any, ...]]]:
        """Verify and decode an invalidation message.

        :raises TamperedValueError: if the signature does not verify.
        """
        origin, ops = self._serializer.loads(self._verify(self._msg_key, blob, b""))
        return origin, ops

    @staticmethod
    def _verify(key: bytes, blob: bytes, context: bytes) -> bytes:
        if len(blob) < len(_MAGIC) + MAC_SIZE or not blob.startswith(_MAGIC):
            raise TamperedValueError("not a cacheplug-signed value")
        mac = blob[len(_MAGIC) : len(_MAGIC) + MAC_SIZE]
        payload = blob[len(_MAGIC) + MAC_SIZE :]
        expected = hmac.new(key, context + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise TamperedValueError(
                "signature mismatch: written by another party or with another secret"
            )
        return payload
