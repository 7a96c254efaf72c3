"""How a ``CACHES`` entry's OPTIONS become ``CachePlug`` options."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from cacheplug.integrations.django.options import parse


def test_redis_tier_options_are_passed_through_and_signed_with_secret_key() -> None:
    parsed = parse(
        "main",
        {
            "OPTIONS": {
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REDIS_PREFIX": "shop",
                "WRITE_THROUGH": True,
                "REDIS_SOCKET_TIMEOUT": 0.5,
                "REDIS_LOCK_TTL": 10,
            }
        },
        secret_key="django-secret",
    )
    options = parsed.plug_options
    assert options["redis_url"] == "redis://127.0.0.1:6379/0"
    assert options["redis_prefix"] == "shop"
    assert options["write_through"] is True
    assert options["redis_socket_timeout"] == 0.5
    assert options["redis_lock_ttl"] == 10
    assert options["secret"] == "django-secret"


def test_an_explicit_secret_wins_over_secret_key() -> None:
    options = parse(
        "main", {"OPTIONS": {"REDIS_URL": "redis://x", "SECRET": "own"}}, secret_key="dj"
    ).plug_options
    assert options["secret"] == "own"


def test_secret_key_is_not_used_when_nothing_is_signed() -> None:
    assert "secret" not in parse("main", {"OPTIONS": {}}, secret_key="dj").plug_options


def test_an_unknown_redis_option_names_the_valid_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match="REDIS_PREFIX"):
        parse("main", {"OPTIONS": {"REDIS_PREFIXX": "a"}})
