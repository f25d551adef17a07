"""What every authorization-server endpoint shares: the issuer, the key ring, the client
registry, the stores, the protected resources, and the audit sink. Built once by app.py.

Client authentication (RFC 6749 §2.3, RFC 7523 §3) lives here because the token, revocation
and introspection endpoints all need it: the presented method must be the one the client
registered, a secret is compared with its stored hash, and a client assertion is verified
with the client's keys and its ``jti`` remembered (replays refused) until it expires.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bastion.audit import events
from bastion.config.auth import Auth
from bastion.core.attributes import AttributeType
from bastion.core.errors import Conflict
from bastion.core.records import AuditRecord
from bastion.core.revocations import RevokedTokens
from bastion.core.stages import AuditSink
from bastion.oauth.client_auth import PresentedClient, presented_client, verify_client_assertion
from bastion.oauth.clients import verify_client_secret
from bastion.oauth.errors import InvalidClient, InvalidGrant, TemporarilyUnavailable
from bastion.oauth.keystore import KeyRingHolder
from bastion.oauth.opaque import digest
from bastion.oauth.registry import ClientRegistry, KnownClient
from bastion.oauth.rfc8414 import TOKEN_PATH
from bastion.oauth.rfc9728 import ProtectedResource
from bastion.store import Store

ASSERTION_REPLAY_KIND = "client_assertion"


class SessionChecker(Protocol):
    """Whether the identity-provider session behind a grant still holds (``bastion.idp.sessions``)."""

    async def check(self, session_id: str) -> Literal["ok", "ended", "unavailable"]: ...


@dataclass(frozen=True, slots=True)
class ResourceScopes:
    resource: ProtectedResource
    required: tuple[str, ...]


@dataclass(slots=True)
class OAuthContext:
    issuer: str
    auth: Auth
    keys: KeyRingHolder
    registry: ClientRegistry
    store: Store
    resources: Mapping[str, ResourceScopes]  # by resource URL
    revoked: RevokedTokens
    refresh_key: bytes
    audit: AuditSink
    sessions: SessionChecker | None = None
    # policy.user_attributes: which user attributes access tokens carry (the ``attrs`` claim)
    user_attributes: Mapping[str, AttributeType] = field(default_factory=dict)

    async def idp_session_holds(self, session_id: object) -> None:
        """A grant from an identity-provider sign-in lives only as long as that session."""
        if not isinstance(session_id, str) or self.sessions is None:
            return
        state = await self.sessions.check(session_id)
        if state == "ended":
            raise InvalidGrant("the sign-in at the identity provider ended; sign in again")
        if state == "unavailable":
            raise TemporarilyUnavailable("the identity provider cannot be reached; try again later")

    def event(
        self,
        event: str,
        *,
        client_id: str | None = None,
        subject: str | None = None,
        status: int | None = None,
        detail: str = "",
        trace_id: str = "-",
    ) -> None:
        self.audit.record(
            AuditRecord(
                ts=time.time(),
                event=event,
                trace_id=trace_id,
                method="oauth",
                subject=subject,
                client_id=client_id,
                status=status,
                detail=detail[:500],
            )
        )

    async def authenticate_client(
        self, form: Mapping[str, Sequence[str]], authorization: str | None
    ) -> KnownClient:
        """The client this request authenticates as, or ``InvalidClient``."""
        presented = presented_client(authorization, form)
        client = await self.registry.find(presented.client_id)
        method = client.record.token_endpoint_auth_method
        if presented.method != method:
            raise InvalidClient(f"this client must authenticate with {method}")
        if method in ("client_secret_basic", "client_secret_post"):
            if presented.secret is None or not verify_client_secret(client.record, presented.secret):
                raise InvalidClient("client authentication failed")
        elif method == "private_key_jwt":
            await self._verify_assertion(presented, client)
        return client

    async def _verify_assertion(self, presented: PresentedClient, client: KnownClient) -> None:
        async def key_for(_client_id: str, kid: str | None) -> object:
            return await self.registry.verification_key(client, kid)

        async def seen_before(client_id: str, jti: str, exp: float) -> bool:
            try:
                await self.store.grants.put(
                    ASSERTION_REPLAY_KIND, digest(client_id + "\x00" + jti), {}, exp + 60
                )
            except Conflict:
                return True
            return False

        await verify_client_assertion(
            presented,
            audiences=[self.issuer, self.issuer + TOKEN_PATH],
            key_for=key_for,
            seen_before=seen_before,
            now=time.time(),
        )

    def refused(self, client_id: str | None, error: str, description: str) -> None:
        self.event(events.TOKEN_REFUSED, client_id=client_id, status=400, detail=f"{error}: {description}")
