"""bastion.web.security: page headers, signed cookies that never raise on hostile input, CSRF
tokens, and Set-Cookie/Cookie handling (requirements digest §5.2: consent cookies are
``__Host-``, ``Secure``, ``HttpOnly``, ``SameSite=Lax`` and signed; pages cannot be framed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string

import pytest

from bastion.web.security import (
    PAGE_HEADERS,
    clear_cookie_header,
    cookie_header,
    cookie_name,
    csrf_token,
    csrf_valid,
    read_cookie,
    seal,
    unseal,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_800_000_000.0
PAYLOAD: dict[str, object] = {"sub": "alice", "client_id": "https://app.example/c.json", "exp": NOW + 600}


def _flip(text: str, index: int) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    char = text[index]
    replacement = alphabet[(alphabet.index(char) + 1) % len(alphabet)] if char in alphabet else "A"
    return text[:index] + replacement + text[index + 1 :]


# --- headers -----------------------------------------------------------------------------------


def test_page_headers() -> None:
    headers = dict(PAGE_HEADERS)
    assert len(headers) == len(PAGE_HEADERS)  # no duplicates
    assert all(name == name.lower() for name in headers)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"pragma"] == b"no-cache"
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"referrer-policy"] == b"no-referrer"
    csp = headers[b"content-security-policy"].decode()
    directives = [d.strip() for d in csp.split(";")]
    assert directives[0] == "default-src 'none'"
    assert directives[1].startswith("style-src 'sha256-")
    assert directives[1].endswith("='")
    assert directives[2:] == ["frame-ancestors 'none'", "base-uri 'none'"]
    assert "form-action" not in csp  # would block the consent POST's redirect to the client
    assert "unsafe" not in csp


# --- seal / unseal -----------------------------------------------------------------------------


def test_seal_round_trip() -> None:
    token = seal(KEY, PAYLOAD, "consent")
    assert token.startswith("v1.")
    assert token.count(".") == 2
    assert set(token) <= set(string.ascii_letters + string.digits + "-_.")  # a valid cookie value
    assert unseal(KEY, token, "consent", NOW) == PAYLOAD


def test_seal_is_signed_not_encrypted_and_deterministic() -> None:
    token = seal(KEY, {"a": 1, "b": [1, 2]}, "p")
    body = token.split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == {"a": 1, "b": [1, 2]}
    assert seal(KEY, {"b": [1, 2], "a": 1}, "p") == token


def test_unseal_without_exp_has_no_expiry() -> None:
    token = seal(KEY, {"browser": "x"}, "browser")
    assert unseal(KEY, token, "browser", 1e12) == {"browser": "x"}


def test_non_ascii_payload_round_trips() -> None:
    payload: dict[str, object] = {"name": "Zoë ☃ 名前", "exp": NOW + 1}
    assert unseal(KEY, seal(KEY, payload, "p"), "p", NOW) == payload


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampering_with_any_part_is_rejected(part: int) -> None:
    token = seal(KEY, PAYLOAD, "consent")
    parts = token.split(".")
    for index in range(len(parts[part])):
        changed = parts.copy()
        changed[part] = _flip(parts[part], index)
        assert unseal(KEY, ".".join(changed), "consent", NOW) is None


def test_wrong_purpose_or_key_is_rejected() -> None:
    token = seal(KEY, PAYLOAD, "consent")
    assert unseal(KEY, token, "login", NOW) is None
    assert unseal(KEY, token, "consen", NOW) is None
    assert unseal(OTHER_KEY, token, "consent", NOW) is None


def test_expiry() -> None:
    token = seal(KEY, PAYLOAD, "consent")
    assert unseal(KEY, token, "consent", NOW + 599.999) == PAYLOAD
    assert unseal(KEY, token, "consent", NOW + 600) is None
    assert unseal(KEY, token, "consent", NOW + 10_000) is None


@pytest.mark.parametrize("exp", ["soon", None, True, [1], {"t": 1}])
def test_a_signed_but_malformed_exp_is_rejected(exp: object) -> None:
    assert unseal(KEY, seal(KEY, {"exp": exp}, "p"), "p", NOW) is None


def test_a_signed_non_object_payload_is_rejected() -> None:
    """Only seal() can make a valid MAC; forge one with the key to reach the JSON checks."""

    def forge(raw: bytes) -> str:
        body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        mac = hmac.new(KEY, b"bastion.seal.v1\x00p\x00" + body.encode(), hashlib.sha256).digest()
        return f"v1.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    assert unseal(KEY, forge(b'{"ok":1}'), "p", NOW) == {"ok": 1}  # the forgery is well-formed
    for raw in (b"[1,2]", b'"text"', b"42", b"not json", b"\xff\xfe", b"[" * 2000):
        assert unseal(KEY, forge(raw), "p", NOW) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "...",
        "v1",
        "v1.",
        "v1..",
        "v1.e30",
        "v1.e30.",
        "v2.e30." + "A" * 43,
        "v1.e30." + "A" * 43,
        "v1.e30." + "A" * 44,
        "v1.e30." + "é" * 43,
        "v1.e30.AAAA.AAAA",
        "v1.e3=0." + "A" * 43,
        "ünïcödé.☃.名前",
        "\x00\x01\x02",
        "v1." + "A" * 10_000 + "." + "A" * 43,
        "." * 5000,
        "\ud800",
    ],
)
def test_garbage_never_raises(garbage: str) -> None:
    assert unseal(KEY, garbage, "p", NOW) is None


def test_non_string_token_is_rejected() -> None:
    assert unseal(KEY, None, "p", NOW) is None  # type: ignore[arg-type]
    assert unseal(KEY, b"v1.e30.x", "p", NOW) is None  # type: ignore[arg-type]


def test_keys_and_purposes_are_checked() -> None:
    with pytest.raises(ValueError, match="key"):
        seal(b"short", {}, "p")
    with pytest.raises(ValueError, match="key"):
        unseal(b"", "v1.e30.x", "p", NOW)
    with pytest.raises(ValueError, match="purpose"):
        seal(KEY, {}, "")
    with pytest.raises(ValueError, match="purpose"):
        seal(KEY, {}, "a\x00b")


def test_oversized_payloads_are_refused_at_seal() -> None:
    with pytest.raises(ValueError, match="4096"):
        seal(KEY, {"blob": "x" * 4000}, "p")


# --- CSRF --------------------------------------------------------------------------------------


def test_csrf_round_trip_and_binding() -> None:
    token = csrf_token(KEY, "browser-1", "consent")
    assert len(token) == 43
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    assert csrf_token(KEY, "browser-1", "consent") == token
    assert csrf_valid(KEY, "browser-1", "consent", token)
    assert not csrf_valid(KEY, "browser-2", "consent", token)
    assert not csrf_valid(KEY, "browser-1", "login", token)
    assert not csrf_valid(OTHER_KEY, "browser-1", "consent", token)
    assert not csrf_valid(KEY, "browser-1", "consent", _flip(token, 0))
    assert not csrf_valid(KEY, "browser-1", "consent", _flip(token, 42))


@pytest.mark.parametrize(
    "presented",
    [None, "", " ", "A" * 43, "A" * 42, "A" * 44, "é" * 43, "\x00" * 43, "x" * 100_000, "\ud800" * 43],
)
def test_csrf_invalid_inputs(presented: str | None) -> None:
    assert csrf_valid(KEY, "browser-1", "consent", presented) is False


def test_csrf_needs_a_browser_id() -> None:
    assert csrf_valid(KEY, "", "consent", csrf_token(KEY, "x", "consent")) is False
    with pytest.raises(ValueError, match="browser_id"):
        csrf_token(KEY, "", "consent")
    odd = "\ud800ünï"  # whatever a cookie decodes to, the token still works
    assert csrf_valid(KEY, odd, "consent", csrf_token(KEY, odd, "consent"))


# --- cookies -----------------------------------------------------------------------------------


def test_cookie_name_prefix() -> None:
    assert cookie_name("bastion_session", secure=True) == "__Host-bastion_session"
    assert cookie_name("bastion_session", secure=False) == "bastion_session"


def test_cookie_header_formats() -> None:
    assert (
        cookie_header("__Host-sid", "abc.def", secure=True, max_age=3600)
        == b"__Host-sid=abc.def; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax"
    )
    assert cookie_header("sid", "v", secure=False, max_age=None) == b"sid=v; Path=/; HttpOnly; SameSite=Lax"
    assert (
        cookie_header("sid", "v", secure=False, max_age=60, path="/oauth")
        == b"sid=v; Path=/oauth; Max-Age=60; HttpOnly; SameSite=Lax"
    )
    sealed = seal(KEY, PAYLOAD, "consent")
    assert cookie_header("__Host-c", sealed, secure=True, max_age=1).startswith(
        f"__Host-c={sealed};".encode()
    )


def test_clear_cookie_header() -> None:
    assert (
        clear_cookie_header("__Host-sid", True)
        == b"__Host-sid=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
    )
    assert clear_cookie_header("sid", False) == b"sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"


@pytest.mark.parametrize(
    ("name", "value", "secure", "max_age", "path"),
    [
        ("a b", "v", False, None, "/"),
        ("a;b", "v", False, None, "/"),
        ("", "v", False, None, "/"),
        ("sid", "v; Domain=evil", False, None, "/"),
        ("sid", "v\r\nSet-Cookie: x=y", False, None, "/"),
        ("sid", 'has"quote', False, None, "/"),
        ("sid", "ünï", False, None, "/"),
        ("sid", "v", False, None, "relative"),
        ("sid", "v", False, None, "/a;Secure"),
        ("sid", "v", False, -1, "/"),
        ("__Host-sid", "v", False, None, "/"),
        ("__Host-sid", "v", True, None, "/oauth"),
        ("__Secure-sid", "v", False, None, "/"),
    ],
)
def test_cookie_header_refuses_bad_input(
    name: str, value: str, secure: bool, max_age: int | None, path: str
) -> None:
    with pytest.raises(ValueError, match=r"cookie|max_age"):
        cookie_header(name, value, secure=secure, max_age=max_age, path=path)


def test_read_cookie_basic() -> None:
    headers = [(b"host", b"gw.example"), (b"cookie", b"a=1; __Host-sid=abc.def; b=2")]
    assert read_cookie(headers, "__Host-sid") == "abc.def"
    assert read_cookie(headers, "a") == "1"
    assert read_cookie(headers, "b") == "2"
    assert read_cookie(headers, "sid") is None
    assert read_cookie([], "a") is None


def test_read_cookie_odd_headers() -> None:
    headers = [
        (b"Cookie", b"junk; =novalue; ;;  a = first ; a=second"),
        (b"cookie", b'a=third; q="quoted"; e=; eq=x=y; \xff\xfe=bin; sp=a b'),
        (b"set-cookie", b"z=not-a-request-cookie"),
    ]
    assert read_cookie(headers, "a") == "first"  # first match wins, across headers too
    assert read_cookie(headers, "q") == "quoted"
    assert read_cookie(headers, "e") == ""
    assert read_cookie(headers, "eq") == "x=y"
    assert read_cookie(headers, "sp") == "a b"
    assert read_cookie(headers, "junk") is None
    assert read_cookie(headers, "z") is None
    assert read_cookie(headers, "\xff\xfe") == "bin"  # latin-1, never a decode error
    assert read_cookie([(b"cookie", b"")], "a") is None
    assert read_cookie([(b"cookie", b";" * 10_000)], "a") is None


def test_read_cookie_then_unseal_round_trip() -> None:
    name = cookie_name("bastion_consent", secure=True)
    set_cookie = cookie_header(name, seal(KEY, PAYLOAD, "consent"), secure=True, max_age=600)
    pair = set_cookie.split(b";")[0]
    value = read_cookie([(b"cookie", b"other=1; " + pair)], name)
    assert value is not None
    assert unseal(KEY, value, "consent", NOW) == PAYLOAD
