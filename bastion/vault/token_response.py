"""A downstream provider's token endpoint answer (RFC 6749 §5.1 / §5.2), read defensively.

What comes back is checked before anything is stored: the access and refresh tokens must be
visible ASCII (they go into headers), ``token_type`` must be Bearer when present (or a type the
preset knows, e.g. Slack's ``user``), ``expires_in`` must be a positive number of seconds below
ten years; ``instance_url``, kept for the presets that say so (Salesforce), must be an https
URL without credentials, query or fragment. An error answer is classified by its ``error`` code
only (providers' descriptions may echo what was sent, so they are never kept): ``invalid_grant``
and the preset's equivalents on a refresh mean the grant is gone
(:class:`~bastion.vault.model.ProviderRefused`); everything else on a refresh — other codes,
5xx, 429, unreadable bodies — may pass
(:class:`~bastion.vault.model.ProviderUnavailable`), so nothing stored is thrown away for it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt

from bastion.vault.model import ProviderRefused, ProviderTokens, ProviderUnavailable
from bastion.vault.presets import ResolvedConnection, ResolvedOAuth

log = logging.getLogger("bastion.vault")

MAX_RESPONSE_BYTES = 64 * 1024
MAX_EXPIRES_IN = 10 * 366 * 86400
MAX_ACCOUNT_CHARS = 200
MAX_URL_CHARS = 2048
TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")  # visible ASCII: it goes into a header
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SCOPES = re.compile(r"[\s,]+")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")  # a DNS name or IPv4 address
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
Grant = Literal["authorization_code", "refresh_token"]


def error_code(body: Mapping[str, Any] | None) -> str | None:
    """The answer's OAuth error code, when it is a plain token (lowercased); HubSpot puts it in
    ``status`` (``BAD_REFRESH_TOKEN``)."""
    if body is None:
        return None
    for key in ("error", "status"):
        code = body.get(key)
        if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
            return code.lower()
    return None


def classify(
    connection: ResolvedConnection, grant: Grant, status: int, body: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    """The token fields of a successful answer; else the error to raise (logged, code only)."""
    oauth = _oauth(connection)
    label = connection.label
    code = error_code(body) if body is not None and ("error" in body or status >= 400) else None
    if body is not None and body.get("ok") is False and code is None:  # Slack
        code = "unknown"
    if status == 200 and body is not None and code is None:
        return _token_fields(body, oauth)
    what = "the authorization code" if grant == "authorization_code" else "a refresh token"
    log.warning(
        "connection %s: the provider refused %s: HTTP %d error=%s", connection.name, what, status, code or "-"
    )
    if status == 429 or status >= 500:
        raise ProviderUnavailable(f"{label} is unavailable (HTTP {status}); try again shortly")
    if code is None:
        raise ProviderUnavailable(f"{label} sent an unusable answer (HTTP {status})")
    if grant == "authorization_code":
        raise ProviderRefused(f"{label} did not accept the authorization ({code})")
    if code in oauth.dead_grant:
        raise ProviderRefused(f"{label} no longer accepts the stored authorization ({code}): connect again")
    if code == "invalid_client":
        raise ProviderUnavailable(
            f"{label} does not accept Bastion's client credentials (invalid_client); "
            "an administrator must fix them"
        )
    raise ProviderUnavailable(f"{label} refused to refresh the token ({code})")


def _oauth(connection: ResolvedConnection) -> ResolvedOAuth:
    if connection.oauth is None:
        raise ValueError(f"connection {connection.name!r} is not an OAuth connection")
    return connection.oauth


def _token_fields(body: Mapping[str, Any], oauth: ResolvedOAuth) -> Mapping[str, Any]:
    nested = body.get(oauth.nested_tokens) if oauth.nested_tokens else None
    if isinstance(nested, dict) and "access_token" in nested:
        return {"id_token": body.get("id_token"), **nested}  # Slack: the user's tokens
    return body


def parse_tokens(
    connection: ResolvedConnection, fields: Mapping[str, Any], asked_at: float
) -> tuple[ProviderTokens, str | None]:
    """Validated tokens, and the ID token if one came (for the account name only). ``expires_at``
    counts from ``asked_at``, the time before the request: the vault errs early, never late."""
    oauth = _oauth(connection)
    unusable = f"{connection.label} sent an unusable answer"

    def bad(why: str) -> ProviderUnavailable:
        log.warning("connection %s: unusable token response: %s", connection.name, why)
        return ProviderUnavailable(unusable)

    token_type = fields.get("token_type")
    if token_type is not None:
        kind = token_type.lower() if isinstance(token_type, str) else None
        if kind == "dpop":
            log.warning("connection %s: the provider issued a DPoP-bound token", connection.name)
            raise ProviderUnavailable(
                f"{connection.label} issued a DPoP-bound token, which Bastion does not support"
            )
        if kind not in oauth.token_types:
            raise bad(f"token_type {_safe(token_type)!r}")
    access = fields.get("access_token")
    if not isinstance(access, str) or not TOKEN.fullmatch(access):
        raise bad("access_token missing or not visible ASCII")
    refresh = fields.get("refresh_token")
    if refresh == "" or refresh is None:
        refresh = None
    elif not isinstance(refresh, str) or not TOKEN.fullmatch(refresh):
        raise bad("refresh_token not visible ASCII")
    expires_at = None
    expires_in = fields.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise bad(f"expires_in {_safe(expires_in)!r}")
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise bad(f"expires_in {expires_in!r} out of range")
        expires_at = asked_at + float(expires_in)
    scope = fields.get("scope")
    scopes = None
    if isinstance(scope, str):
        scopes = tuple(s for s in _SCOPES.split(scope) if s)
    elif scope is not None:
        raise bad("scope is not a string")
    instance_url = None
    if oauth.keeps_instance_url and fields.get("instance_url") is not None:
        instance_url = https_base(fields["instance_url"])
        if instance_url is None:
            raise bad(f"instance_url {_safe(fields['instance_url'])!r}")
    id_token = fields.get("id_token")
    tokens = ProviderTokens(
        access_token=access,
        refresh_token=refresh,
        expires_at=expires_at,
        scopes=scopes,
        instance_url=instance_url,
    )
    return tokens, id_token if isinstance(id_token, str) else None


def https_base(value: object) -> str | None:
    """``value`` as an API base URL (without a trailing ``/``): https, a host, visible ASCII
    (it may go into a header), no credentials, query or fragment; else None."""
    if not isinstance(value, str) or not TOKEN.fullmatch(value) or len(value) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not _HOST.fullmatch(parts.hostname or "") or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment or "?" in value or "#" in value:
        return None
    return value.rstrip("/")


def claim(data: Mapping[str, Any], path: str) -> str | None:
    """``path`` (dotted for nested members) in ``data``, as a short printable display string."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = _UNPRINTABLE.sub("", str(value)).strip()
    return text[:MAX_ACCOUNT_CHARS] or None


def id_token_claim(id_token: str, path: str) -> str | None:
    """A claim of an ID token WITHOUT checking its signature: a display label for "My connections"
    only, never an identity decision (the token came straight from the token endpoint over TLS)."""
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claim(claims, path) if isinstance(claims, dict) else None


def _safe(value: object) -> str:
    return _UNPRINTABLE.sub("?", str(value))[:40]


__all__ = [
    "MAX_RESPONSE_BYTES",
    "TOKEN",
    "claim",
    "classify",
    "error_code",
    "https_base",
    "id_token_claim",
    "parse_tokens",
]
