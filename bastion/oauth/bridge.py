"""Enterprise-Managed Authorization, Role 2: Bastion as an ID-JAG issuer (a bridge for IdPs that
cannot mint ID-JAGs, such as Entra ID). draft-ietf-oauth-identity-assertion-authz-grant §3-4,
the MCP EMA extension §4, RFC 8693 token exchange at Bastion's ``/token``:

1. parse: ``requested_token_type`` = ``urn:ietf:params:oauth:token-type:id-jag``; exactly one
   ``audience`` (the target authorization server's issuer); at most one ``resource`` and ``scope``;
   a ``subject_token`` of type ``refresh_token`` (a Bastion refresh token of this client: current,
   unexpired, unrevoked, never rotated by the exchange) or ``id_token`` (issued by one of Bastion's
   identity providers to this client's id there); anything else is ``invalid_request``;
2. policy (``ema.bridge.targets``): the audience is a target (else ``invalid_target``), the client
   is confidential (EMA §7.7) and may ask for it (else ``unauthorized_client``), the (audience,
   resource) pair is configured (else ``invalid_target``), scopes ⊆ the target's (else
   ``invalid_scope``), the user is enabled and allowed by the target's ``users``/``groups`` (else
   ``invalid_grant``);
3. mint: header ``typ: oauth-id-jag+jwt`` with the key ring's active ``alg``/``kid``; claims
   ``iss``, ``sub`` (per the target's subject mode), ``aud``, ``client_id`` (the client's id at the
   target), ``jti``, ``iat``, ``exp``, ``resource``, ``scope``, ``auth_time``, ``email`` only when
   configured, ``cnf.jkt`` when the request carries a DPoP proof (RFC 9449).

The answer is RFC 8693 §2.2 (``token_type: N_A``, no refresh token). :class:`BridgeIdJagSource`
applies the same policy for Bastion itself as the client (upstreams with ``auth.type: ema``).
Bastion never accepts its own ID-JAGs (``idjag.py``); nothing here is stored, and no token is
logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from bastion.audit import events
from bastion.config.ema import Bridge, BridgeTarget
from bastion.core.credentials import IdJag, IdJagRequest, IdJagUnavailable
from bastion.core.records import UserRecord
from bastion.oauth import dpop
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    UnauthorizedClient,
)
from bastion.oauth.idjag import ID_JAG_TYP
from bastion.oauth.keys import jwk_thumbprint
from bastion.oauth.opaque import MAX_PRESENTED_CHARS, digest
from bastion.oauth.registry import KnownClient
from bastion.oauth.rfc8414 import ID_JAG_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, TOKEN_PATH
from bastion.oauth.rfc8707 import require_single
from bastion.oauth.scopes import parse_scope

TOKEN_EXCHANGE = TOKEN_EXCHANGE_GRANT
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"  # noqa: S105 - a URN
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN
MAX_ID_TOKEN_CHARS = 16_384


class IdTokenVerifier(Protocol):
    """ID tokens of Bastion's identity providers, presented as subject tokens (wired by the
    composition root; the implementation lives with the identity providers)."""

    async def user_for(self, id_token: str, *, audience: str) -> tuple[str, float | None]:
        """The user id of the Bastion user the ID token names, and its ``auth_time``, when the
        token verifies (signature, ``iss``, ``exp``/``iat``) and its ``aud`` is ``audience``;
        otherwise an :class:`OAuthError` (``invalid_grant``)."""
        ...


@dataclass(frozen=True, slots=True)
class MintedIdJag:
    token: str = field(repr=False)  # never logged
    jti: str
    expires_at: int
    scopes: tuple[str, ...]


class IdJagMinter:
    """The bridge's policy and signature, shared by the token exchange and Bastion's own use."""

    def __init__(self, ctx: OAuthContext, bridge: Bridge, pairwise_key: bytes) -> None:
        self._ctx = ctx
        self._bridge = bridge
        self._pairwise_key = pairwise_key
        self._targets = {t.audience: t for t in bridge.targets}

    @property
    def enabled(self) -> bool:
        return self._bridge.enabled and bool(self._targets)

    def target(self, audience: str) -> BridgeTarget:
        target = self._targets.get(audience)
        if target is None:
            raise InvalidTarget("audience is not an authorization server this bridge mints ID-JAGs for")
        return target

    @staticmethod
    def resource(target: BridgeTarget, asked: str | None) -> str:
        if asked is None:
            if len(target.resources) != 1:
                raise InvalidTarget("resource is required: the audience has several resources")
            return target.resources[0]
        if asked not in target.resources:
            raise InvalidTarget("this (audience, resource) pair is not allowed")
        return asked

    @staticmethod
    def scopes(target: BridgeTarget, requested: tuple[str, ...]) -> tuple[str, ...]:
        if not requested:
            return tuple(target.scopes)
        beyond = [s for s in requested if s not in target.scopes]
        if beyond:
            raise InvalidScope("scope beyond what this audience may be granted: " + " ".join(beyond[:5]))
        return requested

    async def user(self, user_id: str) -> UserRecord:
        user = await self._ctx.store.users.get(user_id)
        if user is None or user.disabled:
            raise InvalidGrant("the user is disabled or no longer exists")
        return user

    @staticmethod
    def user_allowed(target: BridgeTarget, user: UserRecord) -> None:
        if not target.users and not target.groups:
            return
        if user.username in target.users or user.user_id in target.users:
            return
        if user.groups & set(target.groups):
            return
        raise InvalidGrant("the user may not obtain ID-JAGs for this audience")

    def mint(
        self,
        target: BridgeTarget,
        user: UserRecord,
        *,
        resource: str,
        scopes: tuple[str, ...],
        client_id: str,
        auth_time: float | None = None,
        jkt: str | None = None,
    ) -> MintedIdJag:
        ring = self._ctx.keys.ring
        lifetime = min(self._bridge.lifetime, ring.max_token_lifetime_s)  # keys outlive what they sign
        now = int(time.time())
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "iss": self._ctx.issuer,
            "sub": self._subject(target, user),
            "aud": target.audience,
            "client_id": client_id,
            "jti": jti,
            "iat": now,
            "exp": now + lifetime,
            "resource": resource,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        if auth_time is not None:
            claims["auth_time"] = int(auth_time)
        if target.include_email and user.email:
            claims["email"] = user.email
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        key = ring.active
        token = jwt.encode(
            claims, key.private_key, algorithm=key.alg, headers={"typ": ID_JAG_TYP, "kid": key.kid}
        )
        return MintedIdJag(token=token, jti=jti, expires_at=now + lifetime, scopes=scopes)

    def _subject(self, target: BridgeTarget, user: UserRecord) -> str:
        if target.subject == "email":
            if not user.email:
                raise InvalidGrant("the user has no e-mail address, which this audience needs")
            return user.email
        if target.subject == "pairwise":
            message = f"{target.audience}\x00{user.user_id}".encode()
            mac = hmac.new(self._pairwise_key, message, hashlib.sha256).digest()
            return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
        return user.user_id


def _one(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    value = require_single(form.get(name, ()), name)
    return value or None


class TokenExchange:
    """RFC 8693 token exchange for an ID-JAG, at Bastion's token endpoint."""

    def __init__(
        self,
        minter: IdJagMinter,
        ctx: OAuthContext,
        *,
        id_tokens: IdTokenVerifier | None = None,
        idp_client_ids: Mapping[str, str] | None = None,
    ) -> None:
        self._minter = minter
        self._ctx = ctx
        self._id_tokens = id_tokens
        self._idp_client_ids = dict(idp_client_ids or {})  # Bastion client id -> its id at the IdPs

    @property
    def enabled(self) -> bool:
        return self._minter.enabled

    async def exchange(
        self, client: KnownClient, form: Mapping[str, Sequence[str]], dpop_proof: str | None
    ) -> dict[str, Any]:
        requested_type = _one(form, "requested_token_type")
        if requested_type is None:
            raise InvalidRequest("requested_token_type is required")
        if requested_type != ID_JAG_TOKEN_TYPE:
            raise InvalidRequest("requested_token_type is not supported: only ID-JAGs are issued")
        audience = _one(form, "audience")
        if audience is None:
            raise InvalidRequest("audience is required: the target authorization server's issuer")
        asked_resource = _one(form, "resource")
        requested_scopes = parse_scope(_one(form, "scope"))
        subject_token, subject_type = _one(form, "subject_token"), _one(form, "subject_token_type")
        if subject_token is None or subject_type is None:
            raise InvalidRequest("subject_token and subject_token_type are required")
        if subject_type not in (REFRESH_TOKEN_TYPE, ID_TOKEN_TYPE):
            raise InvalidRequest("subject_token_type is not supported (refresh_token or id_token)")
        if form.get("actor_token") or form.get("actor_token_type"):
            raise InvalidRequest("actor_token is not supported")

        minter = self._minter
        target = minter.target(audience)
        if client.public:  # EMA §7.7: client authentication MUST be enforced
            raise UnauthorizedClient("only an authenticated (confidential) client may obtain ID-JAGs")
        if client.client_id not in target.clients:
            raise UnauthorizedClient("this client may not obtain ID-JAGs for this audience")
        resource = minter.resource(target, asked_resource)
        scopes = minter.scopes(target, requested_scopes)
        if subject_type == REFRESH_TOKEN_TYPE:
            user, auth_time = await self._refresh_token_subject(client, subject_token)
        else:
            user, auth_time = await self._id_token_subject(client, subject_token)
        minter.user_allowed(target, user)
        jkt = await self._proof_key(dpop_proof)
        minted = minter.mint(
            target,
            user,
            resource=resource,
            scopes=scopes,
            client_id=target.client_ids.get(client.client_id, client.client_id),
            auth_time=auth_time,
            jkt=jkt,
        )
        await self._ctx.registry.used(client)
        self._ctx.event(
            events.TOKEN_ISSUED,
            client_id=client.client_id,
            subject=user.user_id,
            status=200,
            detail=f"token-exchange (ID-JAG for {target.audience} {resource})",
        )
        response: dict[str, Any] = {
            "issued_token_type": ID_JAG_TOKEN_TYPE,
            "access_token": minted.token,
            "token_type": "N_A",
            "expires_in": minted.expires_at - int(time.time()),
        }
        if minted.scopes:
            response["scope"] = " ".join(minted.scopes)
        return response

    async def _refresh_token_subject(
        self, client: KnownClient, token: str
    ) -> tuple[UserRecord, float | None]:
        """A current refresh token of this client (looked up by digest; not rotated)."""
        if len(token) > MAX_PRESENTED_CHARS:
            raise InvalidGrant("the subject token is invalid, expired or revoked")
        record = await self._ctx.store.refresh_tokens.get(digest(token))
        if record is None or record.payload.get("client_id") != client.client_id:
            raise InvalidGrant("the subject token is invalid, expired or revoked", detail="not this client's")
        if record.revoked or record.used_at is not None or record.expires_at <= time.time():
            raise InvalidGrant("the subject token is invalid, expired or revoked", detail="not current")
        payload = record.payload
        await self._ctx.idp_session_holds(payload.get("idp_session"))
        user = await self._minter.user(str(payload["user_id"]))
        auth_time = payload.get("auth_time")
        return user, float(auth_time) if isinstance(auth_time, int | float) else None

    async def _id_token_subject(self, client: KnownClient, token: str) -> tuple[UserRecord, float | None]:
        """An ID token one of Bastion's identity providers issued to this client's id there."""
        audience = self._idp_client_ids.get(client.client_id)
        if self._id_tokens is None or audience is None:
            raise UnauthorizedClient("this client may not present ID tokens as subject tokens")
        if len(token) > MAX_ID_TOKEN_CHARS:
            raise InvalidGrant("the subject token is not a valid ID token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidGrant("the subject token is not a valid ID token") from None
        if header.get("typ") == ID_JAG_TYP:
            raise InvalidGrant("an ID-JAG cannot be exchanged")
        user_id, auth_time = await self._id_tokens.user_for(token, audience=audience)
        return await self._minter.user(user_id), auth_time

    async def _proof_key(self, proof: str | None) -> str | None:
        """With a DPoP proof (RFC 9449), the ID-JAG is bound to the proof's key (``cnf.jkt``)."""
        if not proof:
            return None
        try:
            jwk = jwt.get_unverified_header(proof).get("jwk")
            jkt = jwk_thumbprint({k: str(v) for k, v in jwk.items()}) if isinstance(jwk, dict) else None
        except (jwt.PyJWTError, KeyError, ValueError, json.JSONDecodeError):
            jkt = None
        if jkt is None:
            raise InvalidGrant("the DPoP proof is malformed")
        await dpop.verify_proof(self._ctx, proof, htu=self._ctx.issuer + TOKEN_PATH, expected_jkt=jkt)
        return jkt


class BridgeIdJagSource:
    """:class:`bastion.core.credentials.IdJagSource` for Bastion itself as the client (Role 3):
    the same targets and user policy, without the MCP-client allow-list (Bastion is the client, by
    configuration); requested scopes are narrowed to the target's rather than refused."""

    def __init__(self, minter: IdJagMinter, ctx: OAuthContext) -> None:
        self._minter = minter
        self._ctx = ctx

    async def id_jag(self, request: IdJagRequest) -> IdJag:
        minter = self._minter
        if not minter.enabled:
            raise IdJagUnavailable("Bastion's ID-JAG bridge is not enabled", detail="ema.bridge off")
        try:
            target = minter.target(request.audience)
            resource = minter.resource(target, request.resource)
            user = await minter.user(request.user_id)
            minter.user_allowed(target, user)
            scopes = (
                tuple(s for s in request.scopes if s in target.scopes)
                if request.scopes
                else tuple(target.scopes)
            )
            minted = minter.mint(target, user, resource=resource, scopes=scopes, client_id=request.client_id)
        except OAuthError as err:
            raise IdJagUnavailable(
                f"Bastion may not vouch for you at this server: {err.description}",
                detail=f"{err.error}: {err.description} ({request.audience} {request.resource})",
            ) from None
        self._ctx.event(
            events.TOKEN_ISSUED,
            subject=user.user_id,
            status=200,
            detail=f"bridge (ID-JAG for {target.audience} {resource}, Bastion as the client)",
        )
        return IdJag(assertion=minted.token, expires_at=float(minted.expires_at), scopes=minted.scopes)
