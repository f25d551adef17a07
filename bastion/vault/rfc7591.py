"""How Bastion becomes a client of an upstream's authorization server (``upstream_oauth``):
RFC 7591 Dynamic Client Registration, a Client ID Metadata Document (draft-ietf-oauth-client-id-
metadata-document: the client id is the https URL of Bastion's metadata document), or the
configured client; and where a dynamic registration is kept.

A registration is bound to the authorization server's issuer and to Bastion's redirect URI
(MCP 2026-07-28, SEP-2352: client credentials are per issuer). It is kept sealed in the vault
store under the reserved owner :data:`REGISTRATIONS_OWNER` (no user id looks like it), keyed by
the upstream's name, so restarts and every replica reuse it; a registration for another issuer
or redirect URI is replaced by a new one (docs/decisions.md). Two replicas registering at once
both get valid clients; the last one stored is the one reused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bastion.core.records import VaultRecord
from bastion.store.base import VaultStore
from bastion.vault.discovery import ResponseTooLarge, https_or_loopback, json_object, read_capped
from bastion.vault.envelope import VaultCipher
from bastion.vault.model import ProviderUnavailable, VaultTampered

log = logging.getLogger("bastion.vault")

REGISTRATIONS_OWNER = "~bastion-registrations"
CLIENT_METADATA_PATH = "/oauth/client-metadata.json"
CLIENT_NAME = "Bastion"
MAX_REGISTRATION_BYTES = 64 * 1024
GRANT_TYPES = ("authorization_code", "refresh_token")


@dataclass(frozen=True, slots=True)
class Registration:
    """Bastion's client at one authorization server."""

    issuer: str
    client_id: str
    client_secret: str | None = field(repr=False)
    auth_method: str  # client_secret_basic, client_secret_post or none
    redirect_uri: str
    how: str  # "dcr", "cimd" or "static"


def client_metadata(public_url: str) -> dict[str, Any]:
    """Bastion's Client ID Metadata Document (served at :data:`CLIENT_METADATA_PATH`)."""
    base = public_url.rstrip("/")
    return {
        "client_id": base + CLIENT_METADATA_PATH,
        "client_name": CLIENT_NAME,
        "client_uri": base,
        "redirect_uris": [base + "/connect/callback"],
        "grant_types": list(GRANT_TYPES),
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "web",
    }


def registration_request(redirect_uri: str, auth_method: str, scopes: tuple[str, ...]) -> dict[str, Any]:
    """The RFC 7591 §2 metadata Bastion registers with."""
    request: dict[str, Any] = {
        "client_name": CLIENT_NAME,
        "application_type": "web",
        "redirect_uris": [redirect_uri],
        "grant_types": list(GRANT_TYPES),
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method,
    }
    if scopes:
        request["scope"] = " ".join(scopes)
    return request


def preferred_auth_method(metadata: Mapping[str, Any]) -> str:
    """A confidential client when the server takes one (RFC 8414: the default is basic)."""
    supported = metadata.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    if not isinstance(supported, list):
        return "none"
    for method in ("client_secret_basic", "client_secret_post", "none"):
        if method in supported:
            return method
    return "none"


async def register(
    http: httpx2.AsyncClient,
    endpoint: str,
    *,
    issuer: str,
    redirect_uri: str,
    auth_method: str,
    scopes: tuple[str, ...],
    label: str,
    timeout: float,
) -> Registration:
    """RFC 7591 §3: register at ``endpoint``. :class:`ProviderUnavailable` on any failure."""
    if not https_or_loopback(endpoint):
        raise ProviderUnavailable(f"{label}'s authorization server has no usable registration endpoint")
    body = registration_request(redirect_uri, auth_method, scopes)
    headers = {"accept": "application/json", "content-type": "application/json"}
    try:
        async with http.stream("POST", endpoint, json=body, headers=headers, timeout=timeout) as response:
            status = response.status_code
            answer = json_object(await read_capped(response, MAX_REGISTRATION_BYTES))
    except (httpx2.HTTPError, httpx2.InvalidURL, ResponseTooLarge) as exc:
        log.warning("upstream %s: registration at %s failed: %s", label, endpoint, type(exc).__name__)
        raise ProviderUnavailable(f"{label}'s authorization server could not be reached") from None
    client_id = answer.get("client_id") if answer is not None else None
    if status not in (200, 201) or answer is None or not isinstance(client_id, str) or not client_id:
        error = answer.get("error") if answer is not None else None
        log.warning("upstream %s: registration refused: HTTP %d %s", label, status, str(error)[:64])
        raise ProviderUnavailable(f"{label}'s authorization server refused to register Bastion")
    secret = answer.get("client_secret")
    secret = secret if isinstance(secret, str) and secret else None
    method = answer.get("token_endpoint_auth_method", auth_method)
    if method not in ("client_secret_basic", "client_secret_post", "none") or (method != "none") != bool(
        secret
    ):
        method = "client_secret_basic" if secret else "none"
    return Registration(issuer, client_id, secret, str(method), redirect_uri, "dcr")


class Registrations:
    """Dynamic registrations, sealed in the vault store (one per upstream)."""

    def __init__(
        self, store: VaultStore, cipher: VaultCipher, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._clock = clock

    async def find(self, upstream: str, issuer: str, redirect_uri: str) -> Registration | None:
        """The one kept for ``upstream``, if it was made at ``issuer`` for ``redirect_uri``."""
        record = await self._store.get(REGISTRATIONS_OWNER, upstream)
        if record is None:
            return None
        try:
            kept = self._cipher.open(record)
        except VaultTampered:
            log.warning("upstream %s: the kept registration does not open; registering again", upstream)
            return None
        if kept.get("issuer") != issuer or kept.get("redirect_uri") != redirect_uri:
            return None  # another authorization server (or Bastion moved): register again
        secret = kept.get("client_secret")
        return Registration(
            issuer,
            str(kept["client_id"]),
            secret if isinstance(secret, str) else None,
            str(kept["auth_method"]),
            redirect_uri,
            "dcr",
        )

    async def keep(self, upstream: str, registration: Registration) -> None:
        secret = {
            "issuer": registration.issuer,
            "client_id": registration.client_id,
            "client_secret": registration.client_secret,
            "auth_method": registration.auth_method,
            "redirect_uri": registration.redirect_uri,
        }
        key_id, wrapped, sealed = self._cipher.seal(REGISTRATIONS_OWNER, upstream, secret)
        now = self._clock()
        await self._store.put(
            VaultRecord(
                user_id=REGISTRATIONS_OWNER,
                connection=upstream,
                kind="registration",
                key_id=key_id,
                wrapped_key=wrapped,
                sealed=sealed,
                created_at=now,
                updated_at=now,
            )
        )


__all__ = [
    "CLIENT_METADATA_PATH",
    "REGISTRATIONS_OWNER",
    "Registration",
    "Registrations",
    "client_metadata",
    "preferred_auth_method",
    "register",
    "registration_request",
]
