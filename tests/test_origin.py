from __future__ import annotations

from typing import Any

import pytest

from wsendpoints._origin import OriginPolicy, parse_origin


def scope(*origins: bytes, host: bytes | None = b"app.example.com", scheme: str = "wss") -> dict[str, Any]:
    headers = [(b"origin", origin) for origin in origins]
    if host is not None:
        headers.append((b"host", host))
    return {"type": "websocket", "scheme": scheme, "headers": headers, "server": ("10.0.0.1", 8443)}


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://App.Example.com", ("https", "app.example.com", 443)),
        ("http://localhost:8000/", ("http", "localhost", 8000)),
        ("http://[::1]:8000", ("http", "[::1]", 8000)),
        ("chrome-extension://abc", ("chrome-extension", "abc", 0)),
        ("null", None),
        ("https://app.example.com/path", None),
        ("https://user@app.example.com", None),
        ("https://app.example.com:99999", None),
        ("https://äpp.example.com", None),
    ],
)
def test_parse_origin(value: str, origin: tuple[str, str, int] | None) -> None:
    assert parse_origin(value) == origin


@pytest.mark.parametrize(
    ("origins", "refusal"),
    [
        ((), None),
        ((b"https://app.example.com",), None),
        ((b"HTTPS://APP.EXAMPLE.COM:443",), None),
        ((b"http://app.example.com",), "cross-origin request"),
        ((b"https://app.example.com:444",), "cross-origin request"),
        ((b"https://app.example.com.evil.com",), "cross-origin request"),
        ((b"https://evil.com",), "cross-origin request"),
        ((b"null",), "malformed Origin header"),
        (("https://äpp.example.com".encode(),), "malformed Origin header"),
        ((b"https://app.example.com", b"https://app.example.com"), "more than one Origin header"),
    ],
)
def test_same_origin_policy(origins: tuple[bytes, ...], refusal: str | None) -> None:
    assert OriginPolicy().refusal(scope(*origins)) == refusal


def test_same_origin_without_host_header_uses_server_address() -> None:
    policy = OriginPolicy()
    assert policy.refusal(scope(b"https://10.0.0.1:8443", host=None)) is None
    assert policy.refusal(scope(b"https://app.example.com", host=None)) == "cross-origin request"
    no_server = scope(b"https://10.0.0.1:8443", host=None)
    del no_server["server"]
    assert policy.refusal(no_server) == "cross-origin request"


def test_allow_list_is_exact_and_case_insensitive() -> None:
    policy = OriginPolicy.from_option(["https://App.Example.com", "http://localhost:3000"])
    assert policy.refusal(scope(b"https://app.example.com")) is None
    assert policy.refusal(scope(b"http://localhost:3000")) is None
    assert policy.refusal(scope(b"https://app.example.com.evil.com")) == "origin not allowed"
    assert policy.refusal(scope(b"https://evil-app.example.com")) == "origin not allowed"
    assert policy.refusal(scope(b"http://app.example.com")) == "origin not allowed"


def test_star_allows_any_origin() -> None:
    policy = OriginPolicy.from_option(["https://a.example", "*"])
    assert policy.refusal(scope(b"https://evil.com")) is None
    assert policy.refusal(scope(b"null")) is None


@pytest.mark.parametrize(
    ("option", "error", "message"),
    [
        ("https://a.example", TypeError, "list of origins"),
        (42, TypeError, "list of origins"),
        ([b"https://a.example"], TypeError, "entries must be strings"),
        (["a.example"], ValueError, "'a.example' is not of the form"),
    ],
)
def test_bad_allowed_origins_raise(option: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        OriginPolicy.from_option(option)
