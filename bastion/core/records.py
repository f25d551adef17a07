"""Typed, frozen records that flow one way through the pipeline.

edge builds an :class:`InboundCall`; authn turns headers into a :class:`Principal`;
policy returns a :class:`Decision`; vault resolves an :class:`UpstreamCredential`.
No stage receives a bare ``dict`` of request data from another stage.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from bastion.core.attributes import AttributeValue

JsonObject = dict[str, Any]
RequestId = str | int


class Era(enum.Enum):
    """Which MCP protocol era a message belongs to."""

    LEGACY = "legacy"  # 2024-11-05 .. 2025-11-25: initialize handshake, Mcp-Session-Id
    MODERN = "modern"  # 2026-07-28: server/discover, per-request _meta, no sessions


class MessageKind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"  # a client's answer to a server→client request


class InboundCall(NamedTuple):
    """One HTTP request to an MCP endpoint, parsed once at the edge.

    A NamedTuple rather than a frozen dataclass: equally immutable, and built on every
    request, where a frozen dataclass's per-field ``object.__setattr__`` costs ~4x more.
    """

    endpoint: str | None  # upstream name, or None for the aggregate endpoint
    http_method: str  # POST, GET or DELETE
    era: Era
    kind: MessageKind | None  # None for GET/DELETE
    method: str | None  # JSON-RPC method (requests and notifications)
    request_id: RequestId | None
    name: str | None  # tool or prompt name, or resource URI (what Mcp-Name mirrors)
    protocol_version: str | None
    session_id: str | None  # the client's Mcp-Session-Id (legacy era)
    accept: str  # the client's Accept header, forwarded as is
    body: bytes  # the raw JSON-RPC body, forwarded unchanged when no rewrite is needed
    message: JsonObject  # the decoded body ({} for GET/DELETE)
    trace_id: str  # request id for logs and audit (X-Request-Id)
    last_event_id: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()  # Mcp-Param-* etc., forwarded as is

    @property
    def params(self) -> JsonObject:
        params = self.message.get("params")
        return params if isinstance(params, dict) else {}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user and the client acting for them."""

    subject: str
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    token_id: str | None = None
    authenticated: bool = False
    username: str | None = None  # the user's login name (``preferred_username``), for policy rules
    email: str | None = None
    # declared user attributes (``policy.user_attributes``), sorted by name; a set is a sorted tuple
    attributes: tuple[tuple[str, AttributeValue], ...] = ()


ANONYMOUS = Principal(subject="anonymous")


class ListFilter(Protocol):
    """What one principal may see of a list result (tools, prompts, resources, templates)."""

    def visible(self, upstream: str, kind: str, items: list[JsonObject]) -> list[JsonObject]:
        """``items`` as the upstream listed them (unqualified names); returns those to show."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What policy says about an InboundCall.

    ``allowed`` False with ``step_up`` set: the call would be allowed with more scopes; the client
    gets a 403 ``insufficient_scope`` challenge naming every scope in ``step_up`` (all the
    operation needs, not only the missing ones). ``lists``: for list methods, the filter the
    upstream stage applies to what comes back."""

    allowed: bool
    reason: str = ""
    rule: str | None = None
    step_up: tuple[str, ...] = ()
    lists: ListFilter | None = None
    # arguments were checked: forward the body as Bastion decoded it (a body with duplicate keys
    # must not reach an upstream that reads the other duplicate than the one that was checked)
    canonical_body: bool = False


ALLOW_ALL = Decision(allowed=True, reason="no policy configured", rule=None)


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    """How the call authenticates to the upstream: extra headers (HTTP) or env (stdio)."""

    headers: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    mode: str = "none"
    # which process to use for a stdio upstream; None means the shared one (per-user later)
    process_scope: str | None = None


NO_CREDENTIAL = UpstreamCredential()


class AuditRecord(NamedTuple):
    """One audit event. Never holds a secret: no tokens, no argument values, no headers.

    A NamedTuple (immutable, cheap to build: one per request)."""

    ts: float  # unix seconds
    event: str  # closed noun.verb vocabulary, bastion.audit.events
    trace_id: str
    endpoint: str | None = None  # upstream name, or None for the aggregate endpoint
    upstream: str | None = None  # the upstream the call was routed to
    era: str | None = None
    method: str | None = None
    name: str | None = None  # tool / prompt name or resource URI
    request_id: str | None = None  # JSON-RPC id, as text
    status: int | None = None  # HTTP status sent to the client
    error_code: int | None = None  # JSON-RPC error code, when the outcome is an error
    latency_ms: float | None = None
    upstream_ms: float | None = None
    subject: str | None = None
    client_id: str | None = None
    session: str | None = None  # a short hash of the session id, never the id itself
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StoredAuditRecord:
    seq: int
    record: AuditRecord
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A legacy-era MCP session as Bastion sees it; resolvable from any replica."""

    session_id: str  # Bastion's own id, given to the client
    endpoint: str | None  # upstream name, or None for the aggregate endpoint
    subject: str  # the principal it is bound to
    protocol_version: str
    mode: str  # "passthrough" (HTTP upstream session mapped) or "relay" (Bastion-held channels)
    upstream_session_id: str | None = None  # passthrough: the upstream's Mcp-Session-Id
    client_capabilities: JsonObject = field(default_factory=dict)
    client_info: JsonObject = field(default_factory=dict)
    created_at: float = 0.0
    last_seen: float = 0.0
    replica: str = ""  # the replica that holds in-memory state for relay sessions


# -- authorization server state (bastion.store authz protocols) -----------------------------------


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A local user of Bastion's built-in login. ``username`` is unique and compared exactly:
    the identity layer normalizes it (case, Unicode) before it reaches the store."""

    user_id: str
    username: str
    password_hash: str | None  # an argon2 PHC string; None for users that cannot log in with a password
    display_name: str = ""
    email: str | None = None
    groups: frozenset[str] = frozenset()
    attributes: JsonObject = field(default_factory=dict)
    disabled: bool = False
    source: str = "local"  # "local", or the connector that provisioned the user
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class VaultRecord:
    """One user's credential for one connection (a downstream service such as Salesforce).

    The secret (tokens or API key, as JSON) is sealed with AES-256-GCM under a data key of its
    own; that data key is wrapped under the master key ``key_id``. Both are bound to
    (user_id, connection) as associated data, so a sealed value moved to another row does not
    open. The store only ever sees the sealed text."""

    user_id: str
    connection: str
    kind: str  # "oauth" (tokens from a connect flow) or "api_key" (pasted by the user)
    key_id: str  # the master key that wrapped the data key
    wrapped_key: str = field(repr=False)  # the record's data key, wrapped under that master key
    sealed: str = field(repr=False)  # the secret, sealed with the data key
    scopes: tuple[str, ...] = ()  # as granted by the provider
    expires_at: float | None = None  # the access token's expiry (None: unknown or never)
    status: str = "ok"  # "ok", or "reconnect" (the provider refused the refresh token)
    account: str | None = None  # who the user is at the provider, shown on the connections page
    version: int = 1  # bumped by every change: writes are compare-and-set on it
    created_at: float = 0.0
    updated_at: float = 0.0
    last_used_at: float | None = None
    lease_owner: str | None = None  # the replica/task refreshing it now (single flight)
    lease_until: float = 0.0


@dataclass(frozen=True, slots=True)
class IdpSession:
    """A user's sign-in at an enterprise IdP, kept so Bastion can re-check the user there
    when an MCP client refreshes, and get ID-JAGs for the user there. The IdP's refresh and ID
    tokens are sealed (AES-GCM) by the caller before they reach the store: the store only ever
    sees the opaque sealed text."""

    session_id: str
    user_id: str
    provider: str  # the identity provider's configured name (the user's ``source``)
    sealed_refresh_token: str | None  # None when the IdP granted no refresh token
    auth_time: float  # when the user authenticated at the IdP
    expires_at: float  # the maximum session lifetime: no re-check extends it
    checked_at: float  # the last time the IdP confirmed the user
    # the ID token of the sign-in (or of the latest refresh), sealed like the refresh token: the
    # subject token of an RFC 8693 exchange for an ID-JAG at this IdP; None before migration 0007
    sealed_id_token: str | None = None
    id_token_expires_at: float | None = None  # the ID token's ``exp``


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """One refresh token of a family, keyed by the hash of the token (never the token)."""

    token_hash: str
    family_id: str
    payload: JsonObject
    expires_at: float
    used_at: float | None = None  # when it was rotated; a used token is only good for a retry
    successor_hash: str | None = None  # the token it was rotated into
    revoked: bool = False  # the whole family is revoked


class RotateOutcome(enum.Enum):
    """What :meth:`RefreshStore.rotate` did with the presented token."""

    ROTATED = "rotated"  # first use: the successor was issued
    RETRIED = "retried"  # second use within the grace window: the same successor again
    REUSE_DETECTED = "reuse_detected"  # replay after the grace window: the family is now revoked
    INVALID = "invalid"  # unknown, expired, or in a revoked family


@dataclass(frozen=True, slots=True)
class RotateResult:
    outcome: RotateOutcome
    successor: RefreshTokenRecord | None = None  # set for ROTATED and RETRIED
    family_id: str | None = None  # set unless the token is unknown


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """What a user allowed a client: scopes and resource indicators (RFC 8707)."""

    user_id: str
    client_id: str
    scopes: frozenset[str]
    resources: frozenset[str]
    granted_at: float


ClientSource = Literal["config", "dcr", "cimd"]


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A registered OAuth client: pre-registered in config, or registered by RFC 7591 DCR.
    Clients identified by a Client ID Metadata Document are fetched, never stored."""

    client_id: str
    source: ClientSource
    client_name: str | None
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    token_endpoint_auth_method: str  # none, client_secret_basic, client_secret_post, private_key_jwt
    # SHA-256 hex of the client secret. Client secrets are generated by Bastion (or by
    # `secrets.token_urlsafe(32)` for config clients), never chosen by a person: with 256 bits of
    # entropy a fast hash cannot be brute-forced, so no slow password hash (argon2) is needed.
    secret_hash: str | None = None
    jwks: JsonObject | None = None  # private_key_jwt: the client's public keys, inline
    jwks_uri: str | None = None  # private_key_jwt: or where to fetch them
    scope: str | None = None  # space-separated scopes the client may ask for
    application_type: str = "native"  # native or web (MCP SEP-837)
    trusted: bool = False  # skip the consent screen
    created_at: float = 0.0
    expires_at: float | None = None  # DCR: removed unless used by then; None: never expires
    last_used_at: float | None = None
    metadata: JsonObject = field(default_factory=dict)  # the rest of the RFC 7591 metadata as sent


def request_call(
    endpoint: str | None, method: str, params: JsonObject, *, era: Era, trace_id: str = "-"
) -> InboundCall:
    """A POSTed JSON-RPC request as edge would parse it, built from its parts (``bastion policy
    test`` asks the engine about a call nobody sent)."""
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    name = params.get("name") or params.get("uri")
    return InboundCall(
        endpoint=endpoint,
        http_method="POST",
        era=era,
        kind=MessageKind.REQUEST,
        method=method,
        request_id=1,
        name=name if isinstance(name, str) else None,
        protocol_version=None,
        session_id=None,
        accept="application/json, text/event-stream",
        body=json.dumps(message).encode(),
        message=message,
        trace_id=trace_id,
    )
