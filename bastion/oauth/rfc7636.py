"""RFC 7636 Proof Key for Code Exchange, S256 only (OAuth 2.1 §4.1.1 and §7.5.1: ``plain`` is
never accepted, and the MCP authorization spec requires S256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from bastion.oauth.errors import InvalidGrant, InvalidRequest

# RFC 7636 §4.1: 43..128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# the S256 challenge is BASE64URL(SHA256(verifier)) without padding: exactly 43 characters
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def check_challenge(challenge: str | None, method: str | None) -> str:
    """Validate the authorization request's PKCE parameters; returns the challenge to store."""
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE)")
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge is not a base64url S256 value")
    return challenge


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(verifier: str | None, challenge: str) -> None:
    """Check the token request's ``code_verifier`` against the stored challenge (constant time)."""
    if not verifier:
        raise InvalidGrant("code_verifier is required")
    if not _VERIFIER.match(verifier):
        raise InvalidGrant("code_verifier is malformed")
    if not hmac.compare_digest(s256(verifier), challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
