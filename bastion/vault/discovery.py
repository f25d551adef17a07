"""Where an upstream MCP server wants its tokens from: RFC 9728 Protected Resource Metadata, then
the RFC 8414 / OpenID Connect Discovery metadata of its authorization server (MCP authorization,
"Authorization Server Discovery"; requirements digest §2.3 and §3.1).

- The PRM document is found the way MCP clients find it: an unauthenticated ``ping`` to the
  upstream, whose 401 names it (``WWW-Authenticate: Bearer resource_metadata="…"``, RFC 9728
  §5.1); else the path-suffixed well-known URL, then the root one (RFC 9728 §3.1).
- The scopes to ask for (MCP "Scope Selection Strategy"): the configured ``auth.scopes``, else
  the ``scope`` of that 401 challenge, else the PRM document's ``scopes_supported``, else none.
- Its ``resource`` must be the configured ``auth.resource``, else the upstream's URL (RFC 9728
  §3.3); a document at the root well-known URL may describe the origin, and the one the 401 named
  a parent of the URL on the same origin (as MCP SDK clients accept). A document describing
  another resource is refused, not guessed around. Tokens are asked for that ``resource``.
- The authorization server is ``auth.authorization_server``, else the document's first
  ``authorization_servers`` entry. Its metadata is looked up at the RFC 8414 path-insertion URL,
  then OpenID Connect's insertion and appended forms; its ``issuer`` must be identical to that
  identifier (RFC 8414 §3.3), ``token_endpoint`` is required, and a ``grant_types_supported``
  without ``urn:ietf:params:oauth:grant-type:jwt-bearer`` means ID-JAGs are not accepted there.

With both ``auth.resource`` and ``auth.authorization_server`` configured the PRM document is not
fetched. The result is cached for the life of the process; a failure is not, but it is repeated
(without a request) for ``RETRY_AFTER_S``, so a down server is not asked again on every call.
Every failure is :class:`~bastion.core.errors.UpstreamCredentialsUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx2

from bastion.core.challenge import bearer_params, challenge_scopes
from bastion.core.errors import UpstreamCredentialsUnavailable

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
MAX_METADATA_BYTES = 64 * 1024
RETRY_AFTER_S = 5.0
_PING = json.dumps({"jsonrpc": "2.0", "id": "bastion-discovery", "method": "ping"}).encode()


class ResponseTooLarge(Exception):
    """A response body exceeded its cap (it was not read to the end)."""


class _Failure(Exception):
    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


@dataclass(frozen=True, slots=True)
class UpstreamAuthorization:
    """What Bastion needs to get a token for the upstream."""

    resource: str  # the upstream's RFC 9728 resource identifier
    issuer: str  # its authorization server's issuer identifier (an ID-JAG's audience)
    token_endpoint: str
    scopes: tuple[str, ...]  # asked for at the token endpoint (empty: none)
    # the resource's own list (PRM scopes_supported): what a client may come to need (a step-up)
    offered: tuple[str, ...] = field(default=(), compare=False)
    # the authorization server's whole metadata document (upstream_oauth reads more of it)
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class Pinned(Protocol):
    """What an administrator may pin in ``upstreams[].auth`` instead of discovering it."""

    @property
    def resource(self) -> str | None: ...

    @property
    def authorization_server(self) -> str | None: ...

    @property
    def scopes(self) -> list[str]: ...


def https_or_loopback(url: str) -> bool:
    """An https URL, or http on a loopback host (development)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.hostname or parts.username is not None or parts.fragment:
        return False
    return parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    )


def covers(resource: object, url: str) -> bool:
    """Whether the protected resource ``resource`` includes the server at ``url``: the same origin,
    and a path that is ``url``'s or a parent of it on a segment boundary (a PRM document at the
    root describes the whole origin; MCP SDK clients accept the same)."""
    if not isinstance(resource, str):
        return False
    try:
        have, want = urlsplit(resource), urlsplit(url)
    except ValueError:
        return False
    if (
        have.query
        or have.fragment
        or (have.scheme, have.netloc.lower()) != (want.scheme, want.netloc.lower())
    ):
        return False
    prefix = have.path.rstrip("/")
    return want.path == have.path or want.path.startswith(prefix + "/")


async def read_capped(response: httpx2.Response, limit: int) -> bytes:
    """The body of a streamed response, refusing more than ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"declared {declared} bytes > {limit}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"body exceeds {limit} bytes")
    return bytes(body)


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def prm_candidates(url: str) -> list[str]:
    """RFC 9728 §3.1 well-known URLs for ``url``: path-suffixed first, then the root one."""
    path = urlsplit(url).path.rstrip("/")
    root = _with_path(url, PRM_WELL_KNOWN)
    return [_with_path(url, PRM_WELL_KNOWN + path), root] if path else [root]


def as_metadata_candidates(issuer: str) -> list[str]:
    """RFC 8414 §3.1 and OpenID Connect Discovery URLs for ``issuer``, in the MCP try-order."""
    path = urlsplit(issuer).path.rstrip("/")
    if not path:
        return [_with_path(issuer, OAUTH_WELL_KNOWN), _with_path(issuer, OIDC_WELL_KNOWN)]
    return [
        _with_path(issuer, OAUTH_WELL_KNOWN + path),
        _with_path(issuer, OIDC_WELL_KNOWN + path),
        _with_path(issuer, path + OIDC_WELL_KNOWN),
    ]


class Discovery:
    """The upstream's :class:`UpstreamAuthorization`, found once per process."""

    def __init__(
        self,
        upstream: str,
        url: str,
        auth: Pinned,
        http: httpx2.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        grant: str | None = JWT_BEARER,
    ) -> None:
        """``grant``: a grant type the authorization server must not leave out of its
        ``grant_types_supported`` (None: any)."""
        self._grant = grant
        self._upstream = upstream
        self._url = url
        self._auth = auth
        self._http = http
        self._clock = clock
        self._lock = asyncio.Lock()
        self._found: UpstreamAuthorization | None = None
        self._challenge_scopes: tuple[str, ...] = ()
        self._failed: tuple[float, _Failure] | None = None

    async def authorization(self) -> UpstreamAuthorization:
        if self._found is not None:
            return self._found
        async with self._lock:
            if self._found is not None:
                return self._found
            failed = self._failed
            if failed is None or self._clock() - failed[0] >= RETRY_AFTER_S:
                try:
                    self._found = await self._discover()
                    self._failed = None
                    return self._found
                except _Failure as exc:
                    failed = self._failed = (self._clock(), exc)
            failure = failed[1]
            raise UpstreamCredentialsUnavailable(
                self._upstream, failure.message, detail=f"discovery: {failure.detail}"
            )

    # -- the steps ---------------------------------------------------------------------------

    async def _discover(self) -> UpstreamAuthorization:
        auth = self._auth
        prm: dict[str, Any] = {}
        if auth.resource is None or auth.authorization_server is None:
            prm = await self._protected_resource_metadata()
        resource = auth.resource or str(prm["resource"])
        issuer = auth.authorization_server or self._first_authorization_server(prm)
        token_endpoint, metadata = await self._token_endpoint(issuer)
        offered = self._published_scopes(prm)
        scopes = tuple(auth.scopes) or self._challenge_scopes or offered
        return UpstreamAuthorization(
            resource, issuer, token_endpoint, scopes, offered=offered, metadata=metadata
        )

    async def _protected_resource_metadata(self) -> dict[str, Any]:
        expected = self._auth.resource or self._url
        named = await self._challenged_metadata_url()
        # the document the 401 named, then the well-known ones (MCP: the fallback when there is none)
        candidates = list(dict.fromkeys([*([named] if named else []), *prm_candidates(self._url)]))
        for candidate in candidates:
            document = await self._get_json(candidate, "Protected Resource Metadata")
            if document is None:
                continue
            resource = document.get("resource")
            if not self._describes_us(resource, candidate, named):
                raise _Failure(
                    "its Protected Resource Metadata describes another resource; an administrator "
                    "must check the upstream's URL",
                    f"{candidate}: resource {str(resource)[:200]!r} is not {expected!r} (RFC 9728 §3.3)",
                )
            return document
        raise _Failure(
            "it does not say where to get a token (no Protected Resource Metadata)",
            f"no PRM document at {', '.join(candidates)}",
        )

    def _describes_us(self, resource: object, candidate: str, named: str | None) -> bool:
        """RFC 9728 §3.3: the document fetched at a well-known URL describes the resource that URL
        was made from (the upstream's URL; at the root, also the origin); the one the upstream's
        401 named describes the upstream's URL, or (as MCP SDK clients accept) a parent of it."""
        if self._auth.resource is not None:
            return resource == self._auth.resource
        if resource == self._url:
            return True
        if candidate == named:
            return covers(resource, self._url)
        parts = urlsplit(self._url)
        is_root = candidate == _with_path(self._url, PRM_WELL_KNOWN)
        return (
            is_root
            and isinstance(resource, str)
            and resource.rstrip("/") == f"{parts.scheme}://{parts.netloc}"
        )

    async def _challenged_metadata_url(self) -> str | None:
        """The ``resource_metadata`` of the upstream's 401 to an unauthenticated ``ping``."""
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-method": "ping",
        }
        try:
            async with self._http.stream("POST", self._url, content=_PING, headers=headers) as response:
                status = response.status_code
                challenges = response.headers.get_list("www-authenticate")
        except httpx2.TimeoutException:
            raise _Failure("it did not answer in time", f"probe {self._url}: timeout") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise _Failure("it cannot be reached", f"probe {self._url}: {exc!r}") from None
        if status != 401:
            return None
        params = bearer_params(challenges)
        self._challenge_scopes = challenge_scopes(params)
        named = params.get("resource_metadata")
        if not named:
            return None
        same_origin = urlsplit(named)[:2] == urlsplit(self._url)[:2]
        if not (same_origin or https_or_loopback(named)):
            raise _Failure(
                "its Protected Resource Metadata is not at an https URL", f"resource_metadata {named[:200]!r}"
            )
        return named

    def _first_authorization_server(self, prm: dict[str, Any]) -> str:
        servers = prm.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
            raise _Failure(
                "its Protected Resource Metadata names no authorization server",
                "PRM authorization_servers missing or empty",
            )
        issuer = servers[0]
        if not https_or_loopback(issuer):
            raise _Failure(
                "its authorization server is not at an https URL", f"authorization server {issuer[:200]!r}"
            )
        return issuer

    def _published_scopes(self, prm: dict[str, Any]) -> tuple[str, ...]:
        published = prm.get("scopes_supported")
        if not isinstance(published, list):
            return ()
        return tuple(s for s in published if isinstance(s, str) and s and " " not in s)

    async def _token_endpoint(self, issuer: str) -> tuple[str, dict[str, Any]]:
        candidates = as_metadata_candidates(issuer)
        for candidate in candidates:
            metadata = await self._get_json(candidate, "authorization server metadata")
            if metadata is None:
                continue
            if metadata.get("issuer") != issuer:
                raise _Failure(
                    "its authorization server's metadata names another issuer",
                    f"{candidate}: issuer {str(metadata.get('issuer'))[:200]!r} is not {issuer!r} "
                    "(RFC 8414 §3.3)",
                )
            endpoint = metadata.get("token_endpoint")
            if not isinstance(endpoint, str) or not https_or_loopback(endpoint):
                raise _Failure(
                    "its authorization server has no usable token endpoint",
                    f"{candidate}: token_endpoint {str(endpoint)[:200]!r}",
                )
            grants = metadata.get("grant_types_supported")
            if self._grant == JWT_BEARER and isinstance(grants, list) and JWT_BEARER not in grants:
                raise _Failure(
                    "its authorization server does not accept ID-JAGs (no jwt-bearer grant); it cannot "
                    "be used with Enterprise-Managed Authorization",
                    f"{candidate}: grant_types_supported lacks {JWT_BEARER}",
                )
            return endpoint, metadata
        raise _Failure(
            "its authorization server publishes no metadata",
            f"no metadata at {', '.join(candidates)}",
        )

    async def _get_json(self, url: str, what: str) -> dict[str, Any] | None:
        """The JSON object at ``url``; None when it is not there (any status but 200)."""
        try:
            async with self._http.stream("GET", url, headers={"accept": "application/json"}) as response:
                if response.status_code != 200:  # not there (redirects are not followed): next place
                    return None
                body = await read_capped(response, MAX_METADATA_BYTES)
        except ResponseTooLarge as exc:
            raise _Failure(f"its {what} cannot be read", f"{url}: {exc}") from None
        except httpx2.TimeoutException:
            raise _Failure(f"its {what} did not arrive in time", f"{url}: timeout") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise _Failure(f"its {what} cannot be reached", f"{url}: {exc!r}") from None
        document = json_object(body)
        if document is None:
            raise _Failure(f"its {what} is unreadable", f"{url}: not a JSON object")
        return document


__all__ = [
    "JWT_BEARER",
    "Discovery",
    "Pinned",
    "ResponseTooLarge",
    "UpstreamAuthorization",
    "as_metadata_candidates",
    "covers",
    "https_or_loopback",
    "json_object",
    "prm_candidates",
    "read_capped",
]
