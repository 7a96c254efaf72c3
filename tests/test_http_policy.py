"""Tests of cacheplug.http: one test per storage/serving rule, plus a fuzz of every parser.

Plain functions with a fixed clock; no web framework is imported.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cacheplug.errors import ConfigurationError
from cacheplug.http import (
    DEFAULT_CACHEABLE_STATUSES,
    X_CACHE_BYPASS,
    X_CACHE_MISS,
    BodyBuffer,
    CachedResponse,
    HttpCachePolicy,
    StoreDecision,
    add_variant,
    decode_asgi_headers,
    encode_asgi_headers,
    if_none_match_matches,
    make_etag,
    not_modified_headers,
    parse_cache_control,
    parse_vary,
    request_header_map,
    request_headers_from_asgi,
    request_headers_from_environ,
    variants_ttl,
    vary_key,
)

NOW = 1_700_000_000.0
POLICY = HttpCachePolicy(clock=lambda: NOW)
REQ = {"host": "example.com", "accept-encoding": "gzip"}
OK_HEADERS = [("content-type", "text/plain"), ("cache-control", "max-age=60")]


def decide(headers, request=None, status=200, policy=POLICY, now=NOW) -> StoreDecision:
    return policy.response_store_decision(status, headers, request or REQ, now)


def store(headers, body=b"hello", request=None, status=200, policy=POLICY, now=NOW):
    """Run the store path; the CachedResponse or None."""
    request = request or REQ
    decision = policy.response_store_decision(status, headers, request, now)
    return policy.make_entry(status, headers, body, request, decision, now=now)


# ------------------------------------------------------------------ methods and keys


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "FOO"])
def test_only_get_and_head_are_cacheable(method):
    rd = POLICY.request_decision(method, REQ)
    assert not rd.lookup
    assert not rd.store
    assert rd.x_cache == X_CACHE_BYPASS
    assert POLICY.request_decision("GET", REQ).lookup
    assert POLICY.request_decision("GET", REQ).store
    assert POLICY.request_decision("HEAD", REQ).lookup


@pytest.mark.parametrize(
    ("method", "invalidate"), [("POST", True), ("FOO", True), ("TRACE", False)]
)
def test_unsafe_methods_ask_to_invalidate_the_url(method, invalidate):
    assert POLICY.request_decision(method, REQ).invalidate is invalidate


def test_head_is_served_from_the_get_entry():
    entry = store(OK_HEADERS, body=b"hello")
    variants = add_variant(None, entry, POLICY.max_variants, NOW)
    head = POLICY.request_decision("HEAD", REQ)
    # The key has no method in it, so HEAD finds what GET stored.
    found = POLICY.select(variants, REQ, head, NOW + 1)
    assert found is entry
    status, headers, body = found.respond(REQ, NOW + 1, head=True)
    assert (status, body) == (200, b"")
    assert ("content-length", "5") in headers


def test_head_response_is_never_stored():
    assert not POLICY.request_decision("HEAD", REQ).store
    # Even if an adapter tried, an empty HEAD body disagrees with Content-Length.
    assert store([*OK_HEADERS, ("content-length", "5")], body=b"") is None


def test_key_is_url_with_query_parameters_sorted():
    key = POLICY.primary_key
    assert key("http", "example.com", "/p", "b=2&a=1") == "http://example.com/p?a=1&b=2"
    assert key("http", "example.com", "/p", b"b=2&a=1") == key(
        "http", "example.com", "/p", "a=1&b=2"
    )
    # Stable: repeated names keep their order (getlist() order can change the page).
    assert key("http", "h", "/p", "a=2&a=1") != key("http", "h", "/p", "a=1&a=2")
    assert key("http", "h", "/p", "a=1&&b=2&") == key("http", "h", "/p", "b=2&a=1")
    assert key("http", "h", "/p", "") == key("http", "h", "/p") == "http://h/p"


def test_key_normalizes_scheme_host_and_default_port_and_keeps_the_rest_apart():
    key = POLICY.primary_key
    assert key("HTTP", "Example.COM:80", "/p") == "http://example.com/p"
    assert key("https", "example.com:443", "/p") == "https://example.com/p"
    assert key("http", "example.com:8080", "/p") == "http://example.com:8080/p"
    assert key("https", "example.com", "/p") != key("http", "example.com", "/p")
    assert key("http", "a.example", "/p") != key("http", "b.example", "/p")
    assert key("http", "[::1]:8000", "/p") == "http://[::1]:8000/p"
    assert key("http", "h", "/P") != key("http", "h", "/p")


@pytest.mark.parametrize(
    "host", ["a.com/x", "a.com?x", "u@a.com", "a com", "a.com:x", "[zz]", "é.com", "a.com#"]
)
def test_key_refuses_hosts_that_could_shift_the_key(host):
    assert POLICY.primary_key("http", host, "/y") is None


def test_key_path_and_query_cannot_collide():
    key = POLICY.primary_key
    assert key("http", "h", "/a?b=1") != key("http", "h", "/a", "b=1")
    assert key("http", "h", "/a%3Fb=1") != key("http", "h", "/a?b=1")
    assert key("http", "h", "relative") is None
    assert key("ws", "h", "/") is None


def test_missing_host_falls_back_to_server_address_or_is_uncacheable():
    assert POLICY.primary_key("http", None, "/p", server="10.0.0.5:8000") == (
        "http://10.0.0.5:8000/p"
    )
    assert POLICY.primary_key("http", "", "/p", server="10.0.0.5") == "http://10.0.0.5/p"
    assert POLICY.primary_key("http", None, "/p") is None


# ------------------------------------------------------------------ Vary


def test_vary_gzip_and_identity_are_different_variants():
    hdrs = [*OK_HEADERS, ("vary", "Accept-Encoding")]
    gzip_req = {"host": "h", "accept-encoding": "gzip"}
    ident_req = {"host": "h", "accept-encoding": "identity"}
    gz = store(hdrs, body=b"GZ", request=gzip_req)
    ident = store(hdrs, body=b"ID", request=ident_req)
    variants = add_variant(add_variant(None, gz, 8, NOW), ident, 8, NOW)
    assert len(variants) == 2
    rd = POLICY.request_decision("GET", gzip_req)
    assert POLICY.select(variants, gzip_req, rd, NOW).body == b"GZ"
    assert POLICY.select(variants, ident_req, rd, NOW).body == b"ID"
    # A request without the header matches neither (absent only matches absent).
    assert POLICY.select(variants, {"host": "h"}, rd, NOW) is None
    assert POLICY.select(variants, {"host": "h", "accept-encoding": "br"}, rd, NOW) is None


def test_vary_lookup_works_before_the_response_vary_is_known():
    entry = store([*OK_HEADERS, ("vary", "accept-language")], request={"accept-language": "de"})
    assert entry.vary_names == ("accept-language",)
    assert entry.vary_values == ("de",)
    variants = (entry,)
    rd = POLICY.request_decision("GET", {})
    assert POLICY.select(variants, {"accept-language": "de"}, rd, NOW) is entry
    assert POLICY.select(variants, {"accept-language": "fr"}, rd, NOW) is None


def test_vary_names_are_case_insensitive_lists_and_repeated_headers_count():
    assert parse_vary("Accept-Encoding, ACCEPT-language,,") == (
        "accept-encoding",
        "accept-language",
    )
    hdrs = [*OK_HEADERS, ("Vary", "Accept-Encoding"), ("VARY", "Cookie , accept-encoding")]
    decision = decide(hdrs)
    assert decision.store
    assert decision.vary == ("accept-encoding", "cookie")
    assert vary_key(decision.vary, {"cookie": "a=1"}) == (None, "a=1")


@pytest.mark.parametrize("vary", ["*", "accept, *", " * "])
def test_vary_star_is_never_stored(vary):
    decision = decide([*OK_HEADERS, ("vary", vary)])
    assert not decision.store
    assert decision.reason == "Vary: *"


def test_malformed_vary_is_not_stored():
    assert parse_vary("accept encoding") is None
    assert not decide([*OK_HEADERS, ("vary", "a b")]).store


def test_add_variant_replaces_same_values_caps_and_drops_expired():
    def entry(lang, now=NOW, ttl="60"):
        return store(
            [("cache-control", f"max-age={ttl}"), ("vary", "accept-language")],
            request={"accept-language": lang},
            now=now,
        )

    first, again = entry("de"), entry("de", now=NOW + 1)
    assert add_variant((first,), again, 8, NOW + 1) == (again,)
    many = ()
    for i in range(5):
        many = add_variant(many, entry(str(i)), 3, NOW)
    assert [v.vary_values for v in many] == [("4",), ("3",), ("2",)]
    old, new = entry("old", ttl="1"), entry("new")
    assert add_variant((old,), new, 8, NOW + 5) == (new,)
    assert variants_ttl(many, NOW + 10) == pytest.approx(50)


# ------------------------------------------------------------------ never store


@pytest.mark.parametrize(
    "cache_control",
    ["no-store", "max-age=60, no-store", "private", 'private="Set-Cookie"', "PRIVATE, max-age=9"],
)
def test_private_and_no_store_responses_are_refused(cache_control):
    assert not decide([("cache-control", cache_control)]).store


@pytest.mark.parametrize("name", ["set-cookie", "Set-Cookie"])
def test_set_cookie_response_is_refused(name):
    decision = decide([*OK_HEADERS, (name, "session=alice")])
    assert not decision.store
    assert "set-cookie" in decision.reason
    assert store([*OK_HEADERS, (name, "session=alice")]) is None


def test_authorization_request_requires_public_or_s_maxage():
    alice = {"host": "h", "authorization": "Bearer alice"}
    assert not decide([("cache-control", "max-age=60")], request=alice).store
    assert not decide([], request=alice).store
    # must-revalidate alone is allowed by RFC 9111 §3.5; we decline it (documented).
    assert not decide([("cache-control", "max-age=60, must-revalidate")], request=alice).store
    assert decide([("cache-control", "public, max-age=60")], request=alice).store
    assert decide([("cache-control", "s-maxage=60")], request=alice).store


def test_authorization_request_may_be_served_a_stored_public_entry():
    # RFC 9111 §3.5 restricts storing, not serving: what is stored was allowed for everyone.
    rd = POLICY.request_decision("GET", {"authorization": "Bearer bob"})
    assert (rd.lookup, rd.store) == (True, True)


def test_extra_private_request_headers_behave_like_authorization():
    policy = HttpCachePolicy(private_request_headers=frozenset({"authorization", "cookie"}))
    assert not decide(OK_HEADERS, request={"cookie": "a=1"}, policy=policy).store
    assert decide([("cache-control", "public, max-age=5")], {"cookie": "a=1"}, policy=policy).store


@pytest.mark.parametrize("status", sorted(DEFAULT_CACHEABLE_STATUSES))
def test_default_cacheable_statuses_are_stored_with_default_ttl(status):
    decision = decide([], status=status)
    assert decision.store
    assert decision.ttl == POLICY.default_ttl


@pytest.mark.parametrize("status", [201, 302, 307, 400, 403, 500, 503])
def test_other_statuses_need_explicit_freshness(status):
    assert not decide([], status=status).store
    assert decide([("cache-control", "max-age=30")], status=status).store
    assert decide([("expires", "Wed, 15 Nov 2023 22:14:20 GMT")], status=status, now=NOW).store


@pytest.mark.parametrize("status", [100, 101, 103, 206, 304, 199, 600, 0, -1])
def test_unreplayable_statuses_are_never_stored(status):
    assert not decide([("cache-control", "public, max-age=60")], status=status).store


def test_body_larger_than_limit_is_not_stored():
    policy = HttpCachePolicy(max_body_bytes=4)
    assert not decide([*OK_HEADERS, ("content-length", "5")], policy=policy).store
    assert decide([*OK_HEADERS, ("content-length", "4")], policy=policy).store
    assert store(OK_HEADERS, body=b"12345", policy=policy) is None
    assert store(OK_HEADERS, body=b"1234", policy=policy) is not None


def test_body_buffer_tells_the_caller_when_to_give_up():
    buf = BodyBuffer(5)
    assert buf.feed(b"abc")
    assert buf.feed(b"de")
    assert buf.body == b"abcde"
    assert not buf.feed(b"f")
    assert buf.overflowed
    assert buf.body == b""
    assert not buf.feed(b"")


def test_hop_by_hop_headers_and_truncated_bodies_are_not_stored():
    entry = store(
        [
            *OK_HEADERS,
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("age", "0"),
            ("x-cache", "MISS"),
        ]
    )
    names = [n for n, _ in entry.headers]
    assert not {"connection", "x-hop", "transfer-encoding", "age", "x-cache"} & set(names)
    assert ("content-length", "5") in entry.headers
    assert store([*OK_HEADERS, ("content-length", "99")], body=b"short") is None


def test_cached_response_pickles_and_core_imports_no_framework():
    entry = store([*OK_HEADERS, ("vary", "accept-encoding")])
    copy = pickle.loads(pickle.dumps(entry))
    assert copy == entry
    assert isinstance(copy, CachedResponse)
    assert copy.cache_control == {"max-age": "60"}
    code = (
        "import sys, cacheplug.http; "
        "bad = {'django', 'flask', 'starlette', 'werkzeug', 'asgiref'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ freshness


def test_freshness_s_maxage_then_max_age_then_expires_then_default():
    date = "Tue, 14 Nov 2023 22:13:20 GMT"  # == NOW
    expires = "Tue, 14 Nov 2023 22:15:00 GMT"  # NOW + 100
    assert decide([("cache-control", "max-age=10, s-maxage=20")]).ttl == 20
    assert decide([("cache-control", "max-age=10"), ("expires", expires)]).ttl == 10
    assert decide([("expires", expires), ("date", date)]).ttl == 100
    assert decide([("expires", expires)], now=NOW + 50).ttl == 50  # no Date: use now
    assert decide([]).ttl == POLICY.default_ttl
    assert decide([("cache-control", "max-age=99999")], policy=POLICY.__class__(max_ttl=5)).ttl == 5


@pytest.mark.parametrize(
    "headers",
    [
        [("cache-control", "max-age=0")],
        [("cache-control", "s-maxage=0, max-age=60")],
        [("cache-control", "no-cache")],
        [("cache-control", 'no-cache="Set-Cookie", max-age=60')],
        [("expires", "0")],
        [("expires", "Tue, 14 Nov 2023 22:13:20 GMT")],
        [
            ("expires", "Tue, 14 Nov 2023 22:15:00 GMT"),
            ("expires", "Tue, 14 Nov 2023 23:00:00 GMT"),
        ],
        [("cache-control", "max-age=60"), ("age", "60")],
    ],
)
def test_must_revalidate_and_expired_responses_are_not_stored(headers):
    assert not decide(headers).store


def test_max_age_zero_means_must_revalidate_so_do_not_store():
    for value in ("max-age=0", "s-maxage=0, max-age=60", "max-age=000"):
        decision = decide([("cache-control", value)])
        assert not decision.store
        assert "must revalidate" in decision.reason


def test_age_header_counts_toward_age_and_freshness():
    entry = store([("cache-control", "max-age=60"), ("age", "20")])
    assert entry.expires_at == NOW + 40
    assert entry.age(NOW + 5) == 25


def test_request_no_cache_bypasses_the_entry_but_stores_the_fresh_response():
    for headers in (
        {"cache-control": "no-cache"},
        {"pragma": "no-cache"},
        {"cache-control": "max-age=0"},
        {"cache-control": "max-age=60", "pragma": "x, No-Cache"},
    ):
        rd = POLICY.request_decision("GET", headers)
        assert (rd.lookup, rd.store, rd.x_cache) == (False, True, X_CACHE_BYPASS), headers
    shielded = HttpCachePolicy(honor_request_no_cache=False)
    assert shielded.request_decision("GET", {"cache-control": "no-cache"}).lookup


def test_request_no_store_neither_serves_nor_stores():
    req = {"cache-control": "no-store"}
    rd = POLICY.request_decision("GET", req)
    assert (rd.lookup, rd.store) == (False, False)
    entry = store(OK_HEADERS)
    assert POLICY.select((entry,), req, rd, NOW) is None
    assert not decide(OK_HEADERS, request=req).store


def test_request_max_age_and_min_fresh_limit_what_is_served():
    entry = store(OK_HEADERS)
    req = {"cache-control": "max-age=10"}
    rd = POLICY.request_decision("GET", req)
    assert POLICY.select((entry,), req, rd, NOW + 5) is entry
    assert POLICY.select((entry,), req, rd, NOW + 15) is None
    req = {"cache-control": "min-fresh=30"}
    rd = POLICY.request_decision("GET", req)
    assert POLICY.select((entry,), req, rd, NOW + 20) is entry
    assert POLICY.select((entry,), req, rd, NOW + 40) is None


def test_expired_entry_is_a_miss():
    entry = store(OK_HEADERS)
    rd = POLICY.request_decision("GET", REQ)
    assert POLICY.select((entry,), REQ, rd, NOW + 59.9) is entry
    assert POLICY.select((entry,), REQ, rd, NOW + 60) is None
    assert POLICY.select(None, REQ, rd, NOW) is None


def test_stale_while_revalidate_and_stale_if_error_are_exposed():
    decision = decide(
        [("cache-control", "max-age=5, stale-while-revalidate=30, stale-if-error=600")]
    )
    assert (decision.swr, decision.sie) == (30, 600)
    entry = store([("cache-control", "max-age=5, stale-while-revalidate=30")])
    assert (entry.swr, entry.sie) == (30, None)
    assert variants_ttl((entry,), NOW) == 35
    # Malformed staleness is ignored (never serve stale), the response is still stored.
    decision = decide([("cache-control", "max-age=5, stale-while-revalidate=x")])
    assert decision.store
    assert decision.swr is None


# ------------------------------------------------------------------ serving, ETag, 304


def test_hit_adds_age_and_x_cache_hit_miss_and_bypass():
    entry = store(OK_HEADERS)
    status, headers, body = entry.respond({}, NOW + 7.9)
    assert (status, body) == (200, b"hello")
    assert headers[-2:] == [("age", "7"), ("x-cache", "HIT")]
    assert entry.respond({}, NOW + 7.9, asgi=True)[1][-2:] == [(b"age", b"7"), (b"x-cache", b"HIT")]
    assert entry.hit_headers(NOW - 5)[-2] == ("age", "0")  # clock went back: never negative
    assert POLICY.request_decision("GET", {}).x_cache == X_CACHE_MISS
    assert POLICY.request_decision("POST", {}).x_cache == "BYPASS"


def test_strong_etag_is_generated_when_the_app_sets_none():
    entry = store(OK_HEADERS, body=b"hello")
    assert entry.etag == make_etag(b"hello")
    assert entry.etag.startswith('"')
    assert entry.etag.endswith('"')
    assert len(entry.etag) == 34
    assert ("etag", entry.etag) in entry.headers
    own = store([*OK_HEADERS, ("ETag", 'W/"v1"')])
    assert own.etag == 'W/"v1"'
    assert [v for n, v in own.headers if n == "etag"] == ['W/"v1"']
    assert make_etag(b"a") != make_etag(b"b")


def test_etag_is_deterministic_across_processes():
    code = "from cacheplug.http import make_etag; print(make_etag(b'hello world'))"
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        outs.add(res.stdout.strip())
    assert outs == {make_etag(b"hello world")}


@pytest.mark.parametrize(
    ("header", "etag", "matches"),
    [
        ('"abc"', '"abc"', True),
        ('W/"abc"', '"abc"', True),
        ('"abc"', 'W/"abc"', True),
        ('"x", W/"abc" ,"y"', '"abc"', True),
        ('"a,b", "c"', '"a,b"', True),
        ("*", '"abc"', True),
        (" * ", '"abc"', True),
        ('"abd"', '"abc"', False),
        ("abc", '"abc"', False),
        ('"abc', '"abc"', False),
        ('"x" "abc"', '"abc"', False),
        ("W/", '"abc"', False),
        ("", '"abc"', False),
        (None, '"abc"', False),
        ('"abc"', "", False),
        ('"abc"', "abc", False),
    ],
)
def test_if_none_match_uses_weak_comparison_lists_and_star(header, etag, matches):
    assert if_none_match_matches(header, etag) is matches


def test_if_none_match_hit_answers_304_with_validators_and_no_body():
    hdrs = [
        *OK_HEADERS,
        ("vary", "accept-encoding"),
        ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("expires", "Tue, 14 Nov 2023 22:14:20 GMT"),
        ("content-location", "/doc.txt"),
        ("x-other", "1"),
    ]
    entry = store(hdrs)
    status, headers, body = entry.respond({"if-none-match": f"W/{entry.etag}"}, NOW + 3)
    assert (status, body) == (304, b"")
    names = [n for n, _ in headers]
    assert names == [
        "cache-control",
        "vary",
        "date",
        "expires",
        "content-location",
        "etag",
        "age",
        "x-cache",
    ]
    assert "content-length" not in names
    assert entry.respond({"if-none-match": '"other"'}, NOW)[0] == 200
    asgi = entry.respond({"if-none-match": "*"}, NOW, asgi=True)
    assert asgi[0] == 304
    assert (b"etag", entry.etag.encode()) in asgi[1]
    assert not_modified_headers([("Content-Type", "x"), ("ETag", '"1"')]) == [("ETag", '"1"')]


def test_304_only_for_stored_success_responses():
    entry = store([("cache-control", "max-age=60")], status=404)
    assert entry.etag == ""
    assert entry.respond({"if-none-match": "*"}, NOW)[0] == 404


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    "value",
    [
        "max-age=abc",
        "max-age=",
        "max-age=-1",
        "max-age=5, max-age=10",
        'max-age="5',
        "max-age=5 6",
        "\xff\x00garbage",
        "=5",
        '"no-store"',
        "max-age=٣",
    ],
)
def test_malformed_cache_control_is_not_stored(value):
    decision = decide([("cache-control", value)])
    assert not decision.store


@pytest.mark.parametrize(
    ("value", "ttl"),
    [
        ('max-age="5"', 5),
        ("max-age=5, max-age=5", 5),
        (",, max-age=5 ,,", 5),
        ("MAX-AGE=5", 5),
        ("max-age=99999999999999999999", 2**31),
        ("max-age=" + "9" * 5000, 2**31),
        ("max-age=007", 7),
    ],
)
def test_tolerated_cache_control_forms(value, ttl):
    assert decide([("cache-control", value)]).ttl == ttl


def test_parse_cache_control_shapes():
    cc = parse_cache_control('public, Max-Age=60, private="Set-Cookie, X-Foo", x="a\\"b"')
    assert cc == {"public": None, "max-age": "60", "private": "Set-Cookie, X-Foo", "x": 'a"b'}
    assert not cc.malformed
    assert parse_cache_control(None) == {}
    assert parse_cache_control("a b").malformed
    assert parse_cache_control('a="x"y').malformed


def test_malformed_request_cache_control_bypasses():
    rd = POLICY.request_decision("GET", {"cache-control": "max-age=\x00"})
    assert (rd.lookup, rd.store) == (False, False)


def test_non_utf8_header_bytes_survive_latin1_round_trip():
    raw = [(b"X-Bin", b"\xff\xfe\x80 ok"), (b"Host", b"h")]
    decoded = decode_asgi_headers(raw)
    assert decoded[0] == ("x-bin", "\xff\xfe\x80 ok")
    assert encode_asgi_headers(decoded) == [(b"x-bin", b"\xff\xfe\x80 ok"), (b"host", b"h")]
    req = request_headers_from_asgi([*raw, (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert req["x-bin"] == "\xff\xfe\x80 ok"
    assert req["cookie"] == "a=1; b=2"


def test_request_header_builders_agree():
    pairs = [(b"Accept", b"a"), ("accept", "b"), ("Host", " h ")]
    assert request_header_map(pairs) == {"accept": "a, b", "host": "h"}
    environ = {
        "HTTP_ACCEPT_ENCODING": "gzip",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "REQUEST_METHOD": "GET",
        "wsgi.input": object(),
    }
    assert request_headers_from_environ(environ) == {
        "accept-encoding": "gzip",
        "content-type": "text/plain",
    }


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("default_ttl", 0),
        ("default_ttl", float("nan")),
        ("default_ttl", True),
        ("max_ttl", -1),
        ("max_body_bytes", -1),
        ("max_body_bytes", 1.5),
        ("max_variants", 0),
        ("cacheable_statuses", frozenset({206})),
        ("cacheable_statuses", frozenset({304})),
        ("cacheable_statuses", [200]),
        ("private_request_headers", frozenset({"cookie"})),
        ("uncacheable_response_headers", frozenset({"Set-Cookie"})),
        ("honor_request_no_cache", "yes"),
        ("clock", 5),
    ],
)
def test_bad_options_raise_configuration_error_naming_the_option(option, value):
    with pytest.raises(ConfigurationError, match=option):
        HttpCachePolicy(**{option: value})
    with pytest.raises(ValueError, match="invalid"):
        HttpCachePolicy(**{option: value})


# ------------------------------------------------------------------ fuzz

latin1 = st.text(alphabet=st.characters(max_codepoint=255), max_size=40)
header_names = st.one_of(
    st.sampled_from(
        [
            "cache-control",
            "vary",
            "expires",
            "date",
            "etag",
            "content-length",
            "age",
            "set-cookie",
            "authorization",
            "pragma",
            "if-none-match",
            "connection",
            "host",
        ]
    ),
    latin1,
)
header_pairs = st.lists(st.tuples(header_names, latin1), max_size=8)
fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(value=latin1, etag=latin1, body=st.binary(max_size=20))
def test_fuzz_parsers_never_raise(value, etag, body):
    parse_cache_control(value)
    parse_vary(value)
    if_none_match_matches(value, etag)
    if_none_match_matches(value, make_etag(body))
    not_modified_headers([(value, etag)])


@fuzz
@given(raw=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=20)), max_size=6))
def test_fuzz_raw_header_bytes_never_raise(raw):
    decoded = decode_asgi_headers(raw)
    assert encode_asgi_headers(decoded) == [(n.lower(), v) for n, v in raw]
    request_headers_from_asgi(raw)
    request_header_map(raw)


@fuzz
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    request=header_pairs,
    response=header_pairs,
    status=st.integers(min_value=-5, max_value=700),
    body=st.binary(max_size=30),
    scheme=st.sampled_from(["http", "HTTPS", "ftp", ""]),
    host=st.one_of(st.none(), latin1),
    path=st.one_of(latin1, st.binary(max_size=20)),
    query=st.one_of(latin1, st.binary(max_size=20)),
    offset=st.floats(min_value=-1e6, max_value=1e6),
)
def test_fuzz_policy_pipeline_never_raises(
    method, request, response, status, body, scheme, host, path, query, offset
):
    req = request_header_map(request)
    rd = POLICY.request_decision(method, req)
    POLICY.primary_key(scheme, host, path, query, server=None)
    decision = POLICY.response_store_decision(status, response, req, NOW)
    entry = POLICY.make_entry(status, response, body, req, decision, now=NOW)
    if entry is None:
        return
    assert decision.store
    assert "set-cookie" not in {n for n, _ in entry.headers}
    variants = add_variant(None, entry, POLICY.max_variants, NOW)
    found = POLICY.select(variants, req, rd, NOW + offset)
    if found is not None:
        found.respond(req, NOW + offset, asgi=True)
        found.respond(req, NOW + offset, head=True)
    variants_ttl(variants, NOW)


def test_store_decision_memo_keeps_per_response_values_apart():
    """One header shape, decided from the memo, still honours each response's own values."""
    policy = HttpCachePolicy(clock=lambda: NOW, max_body_bytes=10)
    shape = [("content-type", "text/plain"), ("cache-control", "max-age=60")]
    first = decide(shape, policy=policy)
    assert first.store
    assert first.etag is None
    assert decide(shape, policy=policy) is first  # the memo answered
    assert decide([*shape, ("etag", '"a"')], policy=policy).etag == '"a"'
    assert decide([*shape, ("etag", '"b"')], policy=policy).etag == '"b"'
    assert decide(shape, policy=policy).etag is None  # the ETag did not leak into the memo
    assert decide([*shape, ("content-length", "5")], policy=policy).store
    too_big = decide([*shape, ("content-length", "11")], policy=policy)
    assert (too_big.store, too_big.reason) == (False, "body larger than max_body_bytes")
    assert not decide([*shape, ("content-length", "x")], policy=policy).store
    authed = {**REQ, "authorization": "Bearer t"}
    assert not decide(shape, request=authed, policy=policy).store
    assert decide(shape, policy=policy).store  # the refusal is keyed on the request flag
    assert not decide([*shape, ("set-cookie", "a=1")], policy=policy).store
    assert decide([*shape, ("date", "Tue, 14 Nov 2023 22:13:20 GMT")], policy=policy).store
    assert decide([*shape, ("age", "10")], policy=policy).initial_age == 10
    assert decide(shape, policy=policy).initial_age == 0
    plain = [("content-type", "text/plain")]  # no explicit freshness: status decides
    assert decide(plain, policy=policy).store
    assert decide(plain, status=500, policy=policy).store is False  # status is in the key


def test_cached_response_fields_pickle_and_equality():
    entry = store([*OK_HEADERS, ("vary", "accept-language")])
    copy = pickle.loads(pickle.dumps(entry))
    assert copy == entry
    assert copy is not entry
    assert copy.raw_headers == tuple((n.encode(), v.encode()) for n, v in entry.headers)
    assert [n for n, _ in copy.not_modified] == ["cache-control", "vary", "etag"]
    assert copy != store([*OK_HEADERS, ("vary", "accept-language")], body=b"other")
    assert "CachedResponse(status=200" in repr(copy)


def test_environ_headers_read_an_environ_as_request_headers_does():
    from cacheplug.http import EnvironHeaders, environ_key, request_headers_from_environ

    environ = {
        "HTTP_ACCEPT_ENCODING": " gzip ",
        "CONTENT_TYPE": "",  # servers set it empty on a GET: not a header
        "CONTENT_LENGTH": "0",
        "wsgi.input": object(),
    }
    headers = EnvironHeaders(environ)
    assert dict(headers) == request_headers_from_environ(environ)
    assert headers["accept-encoding"] == "gzip"
    assert "content-type" not in headers
    assert headers.get("content-length") == "0"
    assert environ_key("content-type") == "CONTENT_TYPE"
    assert environ_key("x-request-id") == "HTTP_X_REQUEST_ID"
