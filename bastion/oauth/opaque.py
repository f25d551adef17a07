"""Opaque one-time values (authorization codes, refresh tokens, request handles) and how they
are stored: only as SHA-256 digests, so a database dump yields nothing usable.

A rotated refresh token's successor is derived from it with HMAC under a server key
(``successor``): a client that lost the response and retries with the same token within the
grace window gets the *same* successor again, although the store keeps only digests. Only
someone holding both the old token and the server key can compute it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from bastion.core.crypto import derive_key

__all__ = ["MAX_PRESENTED_CHARS", "derive_key", "digest", "new_opaque", "successor"]

MAX_PRESENTED_CHARS = 512  # longer values are refused before hashing


def new_opaque(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def successor(key: bytes, token: str) -> str:
    mac = hmac.new(key, b"refresh-successor\x00" + token.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")
