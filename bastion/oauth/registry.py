"""Which clients exist: pre-registered (config), dynamically registered (RFC 7591) and
URL-shaped client ids resolved as Client ID Metadata Documents, behind one lookup.

Config clients are copied into the store at startup (so every replica, the CLI and the token
endpoint see the same records); a config client removed from the file is removed from the
store. Metadata documents are never stored: they are cached per their HTTP cache headers by
:class:`~bastion.oauth.cimd.CimdResolver` and re-validated when the cache expires.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from bastion.config.clients import OAuthClient
from bastion.core.records import ClientRecord
from bastion.net.fetch import FetchError, SafeFetcher
from bastion.oauth.cimd import CimdError, CimdResolver, ResolvedClient, is_cimd_client_id
from bastion.oauth.clients import client_from_config
from bastion.oauth.errors import InvalidClient
from bastion.oauth.redirects import is_loopback, redirect_uri_matches
from bastion.store.base import ClientStore


@dataclass(frozen=True, slots=True)
class KnownClient:
    """A client as the authorization server sees it, wherever it came from."""

    record: ClientRecord
    domain: str | None = None  # CIMD: the host that published the metadata (shown on consent)

    @property
    def client_id(self) -> str:
        return self.record.client_id

    @property
    def source(self) -> str:
        return self.record.source

    @property
    def public(self) -> bool:
        return self.record.token_endpoint_auth_method == "none"  # noqa: S105 - a method name

    @property
    def loopback_only(self) -> bool:
        return bool(self.record.redirect_uris) and all(is_loopback(u) for u in self.record.redirect_uris)

    def redirect_allowed(self, redirect_uri: str) -> bool:
        return redirect_uri_matches(self.record.redirect_uris, redirect_uri)

    def allows_grant(self, grant_type: str) -> bool:
        return grant_type in self.record.grant_types

    @property
    def display_name(self) -> str:
        return self.record.client_name or self.record.client_id


def _record_from_document(resolved: ResolvedClient) -> ClientRecord:
    doc = resolved.metadata
    return ClientRecord(
        client_id=doc.client_id,
        source="cimd",
        client_name=doc.client_name,
        redirect_uris=doc.redirect_uris,
        grant_types=doc.grant_types,
        token_endpoint_auth_method=doc.token_endpoint_auth_method,
        jwks=dict(doc.jwks) if doc.jwks is not None else None,
        jwks_uri=doc.jwks_uri,
        scope=doc.scope,
        application_type="native" if all(is_loopback(u) for u in doc.redirect_uris) else "web",
        created_at=resolved.fetched_at,
        metadata={"client_uri": doc.client_uri, "logo_uri": doc.logo_uri},
    )


class ClientRegistry:
    def __init__(
        self,
        store: ClientStore,
        *,
        cimd: CimdResolver | None,
        jwks_fetcher: SafeFetcher | None = None,
    ) -> None:
        self._store = store
        self._cimd = cimd
        self._jwks_fetcher = jwks_fetcher

    @property
    def accepts_metadata_documents(self) -> bool:
        return self._cimd is not None

    async def sync_config(self, clients: Sequence[OAuthClient]) -> None:
        """Make the store's config-sourced clients exactly the configured ones."""
        now = time.time()
        wanted = {c.client_id for c in clients}
        for stale in await self._store.list(source="config"):
            if stale.client_id not in wanted:
                await self._store.delete(stale.client_id)
        for client in clients:
            await self._store.put(client_from_config(client, now))

    async def find(self, client_id: str) -> KnownClient:
        """The client, or ``InvalidClient`` (unknown id, unusable metadata document)."""
        if not client_id or len(client_id) > 2048 or not client_id.isprintable():
            raise InvalidClient("unknown client")
        if is_cimd_client_id(client_id):
            if self._cimd is None:
                raise InvalidClient("client metadata documents are not accepted by this server")
            try:
                resolved = await self._cimd.resolve(client_id)
            except CimdError as exc:
                raise InvalidClient(exc.message, detail=exc.detail) from None
            return KnownClient(_record_from_document(resolved), domain=resolved.domain)
        record = await self._store.get(client_id)
        if record is None or (record.expires_at is not None and record.expires_at <= time.time()):
            raise InvalidClient("unknown client")
        return KnownClient(record)

    async def used(self, client: KnownClient) -> None:
        """A dynamically registered client obtained a token: it is no longer "unused"."""
        if client.source == "dcr":
            await self._store.touch(client.client_id, time.time())

    async def verification_key(self, client: KnownClient, kid: str | None) -> Any:
        """The client's public key for a ``private_key_jwt`` assertion (inline jwks or jwks_uri)."""
        jwks = client.record.jwks
        if jwks is None and client.record.jwks_uri is not None and self._jwks_fetcher is not None:
            try:
                jwks = (await self._jwks_fetcher.get_json(client.record.jwks_uri)).body_json
            except FetchError as exc:
                raise InvalidClient("the client's jwks_uri could not be fetched", detail=exc.detail) from None
        if not isinstance(jwks, dict):
            return None
        try:
            keyset = jwt.PyJWKSet.from_json(json.dumps(jwks))
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError):
            return None
        candidates = [k for k in keyset.keys if kid is None or k.key_id == kid]
        return candidates[0] if len(candidates) == 1 else None
