"""Registered OAuth clients: pre-registered clients from config as store records, and the
client-secret check (RFC 6749 §2.3.1) against the stored SHA-256.

Why SHA-256 and not a password hash: client secrets are generated (``secrets.token_urlsafe(32)``,
256 bits), never chosen by a person, so there is nothing to brute-force and a slow hash would
only cost CPU on every token request.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from bastion.config.clients import OAuthClient
from bastion.core.records import ClientRecord

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def client_from_config(c: OAuthClient, now: float) -> ClientRecord:
    """The store record for a client from the config file (``source="config"``, never expires).

    ``application_type`` is not a config key: confidential clients are ``web``, public ones
    ``native`` (a public client on a web server would hold no secret it could keep).
    """
    method = c.token_endpoint_auth_method or "none"
    return ClientRecord(
        client_id=c.client_id,
        source="config",
        client_name=c.name,
        redirect_uris=tuple(c.redirect_uris),
        grant_types=tuple(c.grant_types),
        token_endpoint_auth_method=method,
        secret_hash=c.secret_sha256,
        jwks=dict(c.jwks) if c.jwks is not None else None,
        jwks_uri=c.jwks_uri,
        scope=c.scope,
        application_type="native" if method == "none" else "web",
        trusted=c.trusted,
        created_at=float(now),
        expires_at=None,
        last_used_at=None,
        metadata={},
    )


def hash_client_secret(secret: str) -> str:
    """The hex SHA-256 stored for a client secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def verify_client_secret(record: ClientRecord, presented: str) -> bool:
    """Whether ``presented`` is the client's secret. False for clients without one.

    The digests are compared in constant time, so the time taken reveals nothing about how
    much of the stored hash matched.
    """
    stored = record.secret_hash
    if stored is None or not _SHA256_HEX.fullmatch(stored):
        return False
    return hmac.compare_digest(hash_client_secret(presented).encode(), stored.encode())
