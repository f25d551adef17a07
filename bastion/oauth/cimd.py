"""Client ID Metadata Documents: draft-ietf-oauth-client-id-metadata-document.

https://datatracker.ietf.org/doc/draft-ietf-oauth-client-id-metadata-document/
MCP auth requirements §3.3 (CIMD) and §3.4 (redirect URIs); checklist rows 29, 30, 31.

A URL-shaped ``client_id`` is fetched (through ``bastion.net``, which enforces the SSRF,
no-redirect, 200-only and 5 KB rules) and validated:

- the document's ``client_id`` equals the URL by simple string comparison (§4.1);
- no shared-secret authentication: ``token_endpoint_auth_method`` is ``none`` or
  ``private_key_jwt``, and no ``client_secret``/``client_secret_expires_at`` (§4.1);
- every redirect URI is https, or http on a loopback host (RFC 8252 §7.3, §8.3), with no
  fragment and no userinfo (MCP §3.4; OAuth 2.1 §2.3.1).

Successes are cached per the response's cache headers, clamped to ``[min_ttl, max_ttl]``
(the draft lets the AS clamp; ``min_ttl`` also stops a document from forcing one outbound
fetch per authorization request). Failures are never cached (§4.3). Concurrent resolves of
one URL share a single fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.core.errors import BastionError
from bastion.net.fetch import FetchError, FetchResult
from bastion.oauth.redirects import is_loopback, redirect_uri_matches, redirect_uri_problem

MAX_CLIENT_ID_LENGTH = 2048
FORBIDDEN_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "client_secret_jwt"})


class CimdError(BastionError):
    """A URL-shaped client_id that cannot be used. OAuth ``invalid_client``; the authorization
    request is aborted without redirecting (the redirect URI is not trusted yet)."""

    status = 400
    error = "invalid_client"


class InvalidClientId(CimdError):
    """The client_id is not a valid client identifier URL (§3)."""


class ClientMetadataUnavailable(CimdError):
    """The document could not be fetched (``__cause__`` is the ``FetchError``)."""


class InvalidClientMetadata(CimdError):
    """The document was fetched but is not an acceptable client metadata document (§4)."""


def is_cimd_client_id(client_id: str) -> bool:
    """True for a client identifier URL (§3): https, a host, a path, no fragment, no userinfo,
    no ``.``/``..`` segments (percent-encoded ones included). A query and a port are allowed."""
    if (
        len(client_id) > MAX_CLIENT_ID_LENGTH
        or not client_id.isprintable()
        or any(c in client_id for c in " \\#")
    ):
        return False
    try:
        parts = urlsplit(client_id)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return False
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc or not parts.path.startswith("/"):
        return False
    return not any(unquote(segment) in (".", "..") for segment in parts.path.split("/"))


class ClientMetadata(BaseModel):
    """The typed subset of a client metadata document Bastion uses (RFC 7591 §2 names).
    Unknown members are ignored; ``client_secret*`` members make the document invalid."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    client_id: str
    client_name: str = Field(min_length=1, max_length=200)  # required by MCP
    redirect_uris: tuple[str, ...] = Field(min_length=1, max_length=20)
    client_uri: str | None = None
    logo_uri: str | None = None
    grant_types: tuple[str, ...] = ("authorization_code",)
    response_types: tuple[str, ...] = ("code",)
    token_endpoint_auth_method: str = "none"  # noqa: S105  (a method name, not a secret)
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    scope: str | None = None
    software_id: str | None = None
    software_version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_shared_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"client_secret", "client_secret_expires_at"} & data.keys()):
            raise ValueError("a client metadata document must not contain client_secret")
        return data

    @field_validator("token_endpoint_auth_method")
    @classmethod
    def _auth_method(cls, value: str) -> str:
        if value in FORBIDDEN_AUTH_METHODS:
            raise ValueError(f"shared-secret authentication {value!r} is not allowed")
        if value not in ("none", "private_key_jwt"):
            raise ValueError(f"unsupported token_endpoint_auth_method {value!r}")
        return value

    @field_validator("redirect_uris")
    @classmethod
    def _redirect_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, uri in enumerate(value):
            problem = redirect_uri_problem(uri)
            if problem:
                raise ValueError(f"redirect_uris[{index}] {problem}")
        return value

    @field_validator("jwks_uri", "client_uri", "logo_uri")
    @classmethod
    def _https_uri(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme != "https":
            raise ValueError("must be an https URL")
        return value

    @model_validator(mode="after")
    def _keys_for_private_key_jwt(self) -> ClientMetadata:
        if self.jwks is not None and self.jwks_uri is not None:
            raise ValueError("jwks and jwks_uri are mutually exclusive")
        if (
            self.token_endpoint_auth_method == "private_key_jwt"  # noqa: S105  (not a secret)
            and self.jwks is None
            and self.jwks_uri is None
        ):
            raise ValueError("private_key_jwt needs jwks_uri or jwks")
        return self


@dataclass(frozen=True, slots=True)
class ResolvedClient:
    """A validated document, when it was fetched, until when it may be used, and the
    ``domain`` (client_id hostname) the consent screen MUST show."""

    metadata: ClientMetadata
    fetched_at: float
    expires_at: float
    domain: str

    @property
    def client_id(self) -> str:
        return self.metadata.client_id

    @property
    def loopback_only(self) -> bool:
        """Every redirect URI is a loopback one: the consent screen shows an extra warning."""
        return all(is_loopback(uri) for uri in self.metadata.redirect_uris)


def redirect_uri_allowed(resolved: ResolvedClient, redirect_uri: str) -> bool:
    """Exact match against the document's ``redirect_uris``, loopback ports excepted."""
    return redirect_uri_matches(resolved.metadata.redirect_uris, redirect_uri)


class JsonFetcher(Protocol):
    """The seam to ``bastion.net.fetch.SafeFetcher``."""

    async def get_json(self, url: str) -> FetchResult: ...


class CimdResolver:
    """Fetch, validate and cache client metadata documents by URL."""

    def __init__(
        self,
        fetcher: JsonFetcher,
        *,
        clock: Callable[[], float] = time.time,
        min_ttl: int = 60,
        max_ttl: int = 86400,
        default_ttl: int = 300,
        max_entries: int = 1024,
    ) -> None:
        if not 0 < min_ttl <= default_ttl <= max_ttl:
            raise ValueError("CimdResolver needs 0 < min_ttl <= default_ttl <= max_ttl")
        self._fetcher = fetcher
        self._clock = clock
        self._min_ttl, self._max_ttl, self._default_ttl = min_ttl, max_ttl, default_ttl
        self._max_entries = max_entries
        self._cache: dict[str, ResolvedClient] = {}
        self._inflight: dict[str, asyncio.Task[ResolvedClient]] = {}

    async def resolve(self, client_id: str) -> ResolvedClient:
        """The validated document for ``client_id``, from cache while fresh, or a ``CimdError``."""
        if not is_cimd_client_id(client_id):
            raise InvalidClientId("client_id is not a valid client metadata document URL")
        cached = self._cache.get(client_id)
        if cached is not None and self._clock() < cached.expires_at:
            return cached
        task = self._inflight.get(client_id)
        if task is None:
            task = asyncio.create_task(self._fetch(client_id))
            self._inflight[client_id] = task
            task.add_done_callback(lambda done: self._settle(client_id, done))
        # shield: one caller giving up must not cancel the fetch the others are waiting for
        return await asyncio.shield(task)

    def _settle(self, client_id: str, task: asyncio.Task[ResolvedClient]) -> None:
        if self._inflight.get(client_id) is task:
            del self._inflight[client_id]
        if not task.cancelled():
            task.exception()  # mark it retrieved even if every waiter went away

    def _store(self, client_id: str, resolved: ResolvedClient) -> None:
        now = self._clock()
        if len(self._cache) >= self._max_entries:
            for key in [k for k, v in self._cache.items() if v.expires_at <= now]:
                del self._cache[key]
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]  # oldest insertion first
        self._cache.pop(client_id, None)
        self._cache[client_id] = resolved

    async def _fetch(self, client_id: str) -> ResolvedClient:
        try:
            result = await self._fetcher.get_json(client_id)
        except FetchError as exc:
            raise ClientMetadataUnavailable(
                f"client metadata document could not be fetched: {exc.message}", detail=exc.detail
            ) from exc
        if not isinstance(result.body_json, dict):
            raise InvalidClientMetadata("client metadata document is not a JSON object")
        try:
            metadata = ClientMetadata.model_validate(result.body_json)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise InvalidClientMetadata(f"invalid client metadata document: {reasons}") from None
        if metadata.client_id != client_id:
            raise InvalidClientMetadata(
                "client metadata document's client_id does not match its URL",
                detail=f"document says {metadata.client_id!r}, fetched from {client_id!r}",
            )
        ttl = self._default_ttl if result.cache_max_age is None else result.cache_max_age
        ttl = min(max(ttl, self._min_ttl), self._max_ttl)
        now = self._clock()
        domain = (urlsplit(client_id).hostname or "").lower()
        resolved = ResolvedClient(metadata=metadata, fetched_at=now, expires_at=now + ttl, domain=domain)
        self._store(client_id, resolved)  # only successes reach this line: failures are never cached
        return resolved
