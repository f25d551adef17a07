"""The RFC 7591 registration endpoint: validation (``rfc7591``), a per-address rate limit
shared by all replicas, storage of the new client (secret as a hash only), and expiry of
registrations that never obtain a token (``auth.registration.unused_ttl``) so an open
endpoint cannot fill the database.
"""

from __future__ import annotations

import time
from typing import Any

from bastion.audit import events
from bastion.core.records import ClientRecord
from bastion.oauth.clients import hash_client_secret
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import SlowDown
from bastion.oauth.opaque import digest
from bastion.oauth.redirects import is_loopback
from bastion.oauth.rfc7591 import RegistrationRequest, new_client_credentials, parse_registration

HOUR = 3600.0


class RegistrationEndpoint:
    def __init__(self, ctx: OAuthContext) -> None:
        self._ctx = ctx

    async def handle(self, body: object, address: str) -> dict[str, Any]:
        ctx = self._ctx
        now = time.time()
        hits = await ctx.store.throttle.hit("register:" + digest(address), now, HOUR)
        if hits > ctx.auth.registration.max_per_hour_per_address:
            raise SlowDown("too many registrations from this address; try again later")
        if ctx.auth.registration.infer_application_type:
            body = _with_application_type(body)
        request = parse_registration(body)
        client_id, secret = new_client_credentials(request)
        record = _record(request, client_id, secret, now, now + ctx.auth.registration.unused_ttl)
        await ctx.store.clients.put(record)
        ctx.event(
            events.CLIENT_REGISTERED,
            client_id=client_id,
            status=201,
            detail=f"{request.application_type} client {request.client_name or '(no name)'!r}"[:300],
        )
        response: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            **request.model_dump(mode="json", exclude_none=True),
        }
        response["grant_types"] = list(record.grant_types)
        if secret is not None:
            response["client_secret"] = secret
            response["client_secret_expires_at"] = 0
        return response


def _with_application_type(body: object) -> object:
    """Fill in a missing ``application_type`` from the redirect URIs (opt-in, for older clients)."""
    if not isinstance(body, dict) or "application_type" in body:
        return body
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        return body  # parse_registration explains what is wrong
    native = all(isinstance(u, str) and is_loopback(u) for u in uris)
    return {**body, "application_type": "native" if native else "web"}


def _record(
    request: RegistrationRequest, client_id: str, secret: str | None, now: float, expires_at: float
) -> ClientRecord:
    grant_types = tuple(dict.fromkeys(request.grant_types))
    return ClientRecord(
        client_id=client_id,
        source="dcr",
        client_name=request.client_name,
        redirect_uris=request.redirect_uris,
        grant_types=grant_types,
        token_endpoint_auth_method=request.token_endpoint_auth_method,
        secret_hash=hash_client_secret(secret) if secret is not None else None,
        jwks=dict(request.jwks) if request.jwks is not None else None,
        jwks_uri=request.jwks_uri,
        scope=None,  # self-asserted: a registration's scope restricts nothing
        application_type=request.application_type,
        created_at=now,
        expires_at=expires_at,
        metadata={
            k: v
            for k, v in request.model_dump(mode="json", exclude_none=True).items()
            if k in ("client_uri", "logo_uri", "contacts", "scope", "software_id", "software_version")
        },
    )
