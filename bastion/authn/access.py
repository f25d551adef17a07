"""The authn stage with authentication on: every MCP request carries a Bastion access token
issued for exactly this endpoint (RFC 8707 audience), unexpired, unrevoked, with the scopes
the endpoint requires.

Failures become :class:`~bastion.core.errors.Unauthorized` with the complete RFC 6750 §3
challenge: 401 + ``resource_metadata`` + ``scope`` (no ``error`` when no token was sent,
``error="invalid_token"`` for a bad one), or 403 ``error="insufficient_scope"`` naming every
scope the endpoint needs in one challenge (MCP: never one scope at a time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bastion.authn.bearer import AuthnError, BearerVerifier
from bastion.core.challenge import bearer_challenge
from bastion.core.errors import BastionError, Unauthorized
from bastion.core.records import InboundCall, Principal
from bastion.core.revocations import RevokedTokens


@dataclass(frozen=True, slots=True)
class EndpointAccess:
    """What one MCP endpoint requires: its resource URL (the token's ``aud``), where its
    Protected Resource Metadata is, and the scopes every request needs."""

    resource: str
    metadata_url: str
    required_scopes: tuple[str, ...]


class AccessTokenAuthenticator:
    def __init__(
        self,
        verifier: BearerVerifier,
        endpoints: Mapping[str | None, EndpointAccess],
        revoked: RevokedTokens,
    ) -> None:
        self._verifier = verifier
        self._endpoints = dict(endpoints)
        self._revoked = revoked

    def authenticate(self, call: InboundCall, authorization: str | None) -> Principal:
        access = self._endpoints[call.endpoint]
        try:
            principal = self._verifier.authenticate(authorization, resource=access.resource)
        except AuthnError as exc:
            raise self._refusal(access, exc.message, exc.error, exc.status, exc.detail) from None
        if principal.token_id in self._revoked:
            raise self._refusal(access, "The access token was revoked", "invalid_token", 401, "revoked jti")
        missing = [s for s in access.required_scopes if s not in principal.scopes]
        if missing:
            raise Unauthorized(
                "The access token lacks scopes this endpoint requires",
                challenge=bearer_challenge(
                    resource_metadata=access.metadata_url,
                    scopes=access.required_scopes,
                    error="insufficient_scope",
                    description="Required scopes: " + " ".join(access.required_scopes),
                ),
                status=403,
                detail="missing " + " ".join(missing),
            )
        return principal

    def insufficient_scope(self, call: InboundCall, scopes: tuple[str, ...], reason: str) -> BastionError:
        access = self._endpoints[call.endpoint]
        needed = tuple(dict.fromkeys([*access.required_scopes, *scopes]))
        return Unauthorized(
            "The access token lacks scopes this operation requires",
            challenge=bearer_challenge(
                resource_metadata=access.metadata_url,
                scopes=needed,
                error="insufficient_scope",
                description="Required scopes: " + " ".join(needed),
            ),
            status=403,
            detail=reason,
        )

    @staticmethod
    def _refusal(
        access: EndpointAccess, message: str, error: str | None, status: int, detail: str
    ) -> Unauthorized:
        challenge = bearer_challenge(
            resource_metadata=access.metadata_url,
            scopes=access.required_scopes,
            error=error,
            description=message if error else None,
        )
        return Unauthorized(message, challenge=challenge, status=status, detail=detail)
