"""ID tokens that Bastion's identity providers issued to *other* applications (MCP clients that
sign users in at the enterprise IdP themselves), presented to Bastion's ID-JAG bridge as RFC 8693
subject tokens (MCP EMA §4.3: the IdP validates the subject token, whose ``aud`` must be the
client's id at the IdP).

Every check of :meth:`OidcProvider.verify_id_token` applies (signature by a current key of the
provider, ``iss`` including Entra's tenant forms, allowed tenants, ``exp``/``iat`` with skew,
``azp``) with the client's id at the IdP as the expected ``aud`` instead of Bastion's. The user
is the one federation created for that (issuer, subject) at sign-in (``claims.py``): the bridge
never creates users, so a user must have signed in to Bastion once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import httpx2
import jwt

from bastion.idp.claims import identity_from_claims
from bastion.idp.oidc import IdpError, OidcProvider
from bastion.idp.presets import ResolvedProvider
from bastion.store.base import UserStore


class IdTokenSubjects:
    def __init__(
        self, providers: Iterable[ResolvedProvider], users: UserStore, http: httpx2.AsyncClient | None = None
    ) -> None:
        self._providers = list(providers)
        self._users = users
        self._http = http or httpx2.AsyncClient(timeout=10, follow_redirects=False)
        self._verifiers: dict[tuple[str, str], OidcProvider] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    def _verifier(self, provider: ResolvedProvider, audience: str) -> OidcProvider:
        """A relying party for ``provider`` that expects ``audience`` as the ID token's ``aud``."""
        found = self._verifiers.get((provider.name, audience))
        if found is None:
            config = provider.config.model_copy(update={"client_id": audience})
            resolved = dataclasses.replace(provider, config=config)
            found = OidcProvider(resolved, redirect_uri="", http=self._http)
            self._verifiers[(provider.name, audience)] = found
        return found

    async def _candidates(self, iss: object) -> list[ResolvedProvider]:
        exact: list[ResolvedProvider] = []
        templated: list[ResolvedProvider] = []
        for provider in self._providers:
            try:
                issuer = (await self._verifier(provider, "-").metadata()).get("issuer")
            except IdpError:
                continue
            if issuer == iss:
                exact.append(provider)
            elif provider.entra_issuers:
                templated.append(provider)
        return exact or templated

    async def user_for(self, id_token: str, *, audience: str) -> tuple[str, float | None]:
        """The Bastion user id the ID token names and its ``auth_time``; :class:`IdpError` when it
        does not verify for ``audience`` or names no user of Bastion."""
        try:
            unverified: dict[str, Any] = jwt.decode(id_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise IdpError("The subject token is not an ID token", detail="not a JWT") from None
        candidates = await self._candidates(unverified.get("iss"))
        if not candidates:
            raise IdpError(
                "The ID token is not from one of Bastion's identity providers",
                detail=f"iss {unverified.get('iss')!r}",
            )
        failure: IdpError | None = None
        for provider in candidates:
            try:
                claims = await self._verifier(provider, audience).verify_id_token(id_token, nonce=None)
            except IdpError as exc:
                failure = failure or exc
                continue
            user = await self._users.get(identity_from_claims(provider, claims).user_id)
            if user is None:
                raise IdpError(
                    "The ID token's user has not signed in to Bastion yet", detail=f"provider {provider.name}"
                )
            auth_time = claims.get("auth_time")
            return user.user_id, float(auth_time) if isinstance(auth_time, int | float) else None
        assert failure is not None
        raise failure
