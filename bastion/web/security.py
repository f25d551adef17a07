"""Browser-facing security: the headers every page carries, signed cookies, CSRF tokens.

- ``PAGE_HEADERS``: no caching, no framing (requirements digest §5.2: consent pages need
  anti-framing), no sniffing, no referrer, and a CSP that allows exactly one thing: the inline
  CSS block of ``theme.PAGE_CSS``, by hash. There is deliberately no ``form-action``: the consent
  form's POST answers with a redirect to the client's own redirect URI, and Chromium applies
  ``form-action`` to that redirect too.
- ``seal``/``unseal``: HMAC-SHA256 signed (not encrypted) JSON, bound to a purpose, with an
  optional ``exp``. Format ``v1.<payload>.<mac>``, both base64url without padding. Every failure
  is ``None``: hostile input never raises and is never logged.
- ``csrf_token``/``csrf_valid``: HMAC of a per-browser id and the form's purpose.
- Cookies: ``HttpOnly; SameSite=Lax`` always, ``__Host-`` prefix and ``Secure`` on https
  (§5.2: consent cookies carry ``__Host-``, ``Secure``, ``HttpOnly``, ``SameSite=Lax``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable

from bastion.web.theme import PAGE_CSS

KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096  # browsers drop larger cookies; longer input is rejected before any work

_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_CSS.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'; base-uri 'none'"
)

PAGE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
)

_VERSION = "v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAC_CHARS = 43  # 32 bytes of HMAC-SHA256, base64url without padding
# RFC 6265 §4.1.1: cookie-name is an RFC 7230 token; cookie-octet excludes CTLs, space, '"', ',', ';', '\'
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_COOKIE_PATH = re.compile(r"/[\x20-\x3a\x3c-\x7e]*")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes | None:
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < KEY_BYTES:
        raise ValueError(f"the signing key must be at least {KEY_BYTES} random bytes")


def _label(kind: str, purpose: str) -> bytes:
    """Domain separation: a MAC made for one kind and purpose is useless for any other."""
    if not purpose or "\x00" in purpose:
        raise ValueError("purpose must be a non-empty string without NUL")
    return f"bastion.{kind}.{_VERSION}\x00{purpose}\x00".encode()


def _mac(key: bytes, label: bytes, message: bytes) -> str:
    return _b64url(hmac.new(key, label + message, hashlib.sha256).digest())


def seal(key: bytes, payload: dict[str, object], purpose: str) -> str:
    """Sign ``payload`` (JSON-serialisable; ``exp`` in unix seconds, if given, bounds its life)."""
    _check_key(key)
    body = _b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False).encode())
    token = f"{_VERSION}.{body}.{_mac(key, _label('seal', purpose), body.encode('ascii'))}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"sealed payload is over {MAX_TOKEN_CHARS} characters")
    return token


def unseal(key: bytes, token: str, purpose: str, now: float) -> dict[str, object] | None:
    """The payload ``seal`` signed for ``purpose``, or None if ``token`` is not exactly that
    (tampered, other key or purpose, malformed, or ``exp`` reached)."""
    _check_key(key)
    label = _label("seal", purpose)
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION or len(parts[2]) != _MAC_CHARS:
        return None
    body, presented = parts[1], parts[2]
    if not hmac.compare_digest(_mac(key, label, body.encode("ascii")).encode(), presented.encode()):
        return None
    raw = _b64url_decode(body)
    if raw is None:
        return None
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    if "exp" in payload:
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            return None
        if now >= exp:
            return None
    return payload


def csrf_token(key: bytes, browser_id: str, purpose: str) -> str:
    """The CSRF token a form for ``purpose`` carries in the browser identified by ``browser_id``."""
    _check_key(key)
    if not browser_id:
        raise ValueError("browser_id must not be empty")
    return _mac(key, _label("csrf", purpose), browser_id.encode("utf-8", "surrogatepass"))


def csrf_valid(key: bytes, browser_id: str, purpose: str, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token for ``browser_id`` and ``purpose``."""
    if not browser_id or not isinstance(browser_id, str):
        return False
    if not isinstance(presented, str) or len(presented) != _MAC_CHARS or not presented.isascii():
        return False
    expected = csrf_token(key, browser_id, purpose)
    return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii"))


def cookie_name(base: str, secure: bool) -> str:
    """``__Host-<base>`` on https (bound to this exact host, Secure, Path=/), else ``base``."""
    return f"__Host-{base}" if secure else base


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None, path: str = "/") -> bytes:
    """A ``Set-Cookie`` header value. Raises ValueError on anything that could split the header
    or that the ``__Host-``/``__Secure-`` prefix rules (RFC 6265bis §4.1.3) would refuse."""
    if not _COOKIE_NAME.fullmatch(name):
        raise ValueError("cookie name must be an RFC 6265 token")
    if not _COOKIE_VALUE.fullmatch(value):
        raise ValueError("cookie value has characters a cookie may not carry")
    if not _COOKIE_PATH.fullmatch(path):
        raise ValueError("cookie path must start with '/' and contain no ';' or control characters")
    if name.lower().startswith(("__host-", "__secure-")) and not secure:
        raise ValueError("__Host- and __Secure- cookies must be Secure")
    if name.lower().startswith("__host-") and path != "/":
        raise ValueError("__Host- cookies must have Path=/")
    if max_age is not None and (isinstance(max_age, bool) or max_age < 0):
        raise ValueError("max_age must be a non-negative number of seconds")
    attributes = [f"{name}={value}", f"Path={path}"]
    if max_age is not None:
        attributes.append(f"Max-Age={max_age}")
    attributes.append("HttpOnly")
    if secure:
        attributes.append("Secure")
    attributes.append("SameSite=Lax")
    return "; ".join(attributes).encode("ascii")


def clear_cookie_header(name: str, secure: bool, path: str = "/") -> bytes:
    """A ``Set-Cookie`` value that deletes cookie ``name`` (same name, path and prefix rules)."""
    return cookie_header(name, "", secure=secure, max_age=0, path=path)


def read_cookie(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name`` from the request's ``Cookie`` header(s), or None.

    The first occurrence wins (browsers send the most specific path first). Pairs without
    ``=`` are skipped; a value in double quotes is unquoted. Never raises on hostile headers.
    """
    for header, raw in headers:
        if header.lower() != b"cookie":
            continue
        for pair in raw.decode("latin-1").split(";"):
            key, sep, value = pair.partition("=")
            if not sep or key.strip(" \t") != name:
                continue
            value = value.strip(" \t")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None
