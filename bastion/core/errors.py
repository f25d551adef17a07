"""The error tree. Every failure a stage can produce is one of these; only
``bastion.edge.render`` turns them into bytes.

Each error carries a *public* message (safe to show a client) and a private
``detail`` (logged, never sent). The tree::

    BastionError
    ├── ClientError                   the request is at fault (4xx or JSON-RPC error)
    │   ├── ParseError                -32700, 400  body is not JSON
    │   ├── InvalidRequest            -32600, 400  not one JSON-RPC 2.0 object (batches included)
    │   ├── MethodNotFound            -32601       unknown method (404 in the modern era)
    │   ├── InvalidParams             -32602, 400
    │   ├── HeaderMismatch            -32020, 400  Mcp-Method/Mcp-Name/MCP-Protocol-Version vs body
    │   ├── UnsupportedProtocolVersion -32022, 400
    │   ├── BodyTooLarge              413
    │   ├── NotAcceptable             406          Accept lacks application/json (or text/event-stream)
    │   ├── UnsupportedMediaType      415          POST body is not application/json
    │   ├── HttpMethodNotAllowed      405
    │   ├── InvalidHost               421          DNS-rebinding protection
    │   ├── InvalidOrigin             403          DNS-rebinding protection
    │   ├── UnknownEndpoint           404          no such upstream
    │   ├── SessionRequired           400          legacy request without Mcp-Session-Id
    │   ├── SessionNotFound           404          unknown or expired Mcp-Session-Id
    │   ├── Unauthorized              -32014, 401/403 with WWW-Authenticate (RFC 6750 §3)
    │   ├── PolicyDenied              -32013       policy refused the call (JSON-RPC error, 200)
    │   ├── SuppliedTokenMissing      -32001       #234 mode: tools/call without the user's token
    │   └── SuppliedTokenRejected     -32003       #234 mode: the upstream refused that token
    └── UpstreamError                 the upstream failed; always names the upstream
        ├── UpstreamUnavailable       -32010  refused, DNS, process not running
        ├── UpstreamTimeout           -32011  no answer in time
        ├── UpstreamFailed            -32012  crashed mid-stream, bad status, unparseable reply
        │   └── UpstreamRejectedCredentials  401/403 from the upstream (never its challenge)
        └── UpstreamCredentialsUnavailable -32015  no credential for this user at this upstream
            │                                 (e.g. the IdP refused an ID-JAG; sign in again)
            └── ConnectionRequired            the user must connect an account first: a URL
                                              elicitation in the client's era (input_required,
                                              -32042, or a tool error carrying the link)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from bastion.core.challenge import bearer_params, challenge_scopes

# JSON-RPC 2.0 and MCP codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Bastion's own, in the implementation-defined range -32000..-32019
UPSTREAM_UNAVAILABLE = -32010
UPSTREAM_TIMEOUT = -32011
UPSTREAM_FAILED = -32012
POLICY_DENIED = -32013
UNAUTHORIZED = -32014  # HTTP 401 / 403 with a Bearer challenge; clients act on the header
UPSTREAM_CREDENTIALS = -32015
# the codes of the multi-user authorization proposal (discussion #234), for its compatibility mode
SUPPLIED_TOKEN_MISSING = -32001
SUPPLIED_TOKEN_REJECTED = -32003
URL_ELICITATION_REQUIRED = -32042  # 2025-11-25 only (reserved, never emitted, in 2026-07-28)


class BastionError(Exception):
    code: ClassVar[int] = INTERNAL_ERROR
    status: ClassVar[int] = 500
    event: ClassVar[str] = "call.failed"

    def __init__(self, message: str, *, detail: str = "", data: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.data = data
        # the JSON-RPC id of the request being refused, once it is known: every error
        # response carries the request's id (null only when the id itself is unreadable)
        self.request_id: str | int | None = None


class ClientError(BastionError):
    code = INVALID_REQUEST
    status = 400
    event = "call.rejected"


class ParseError(ClientError):
    code = PARSE_ERROR


class InvalidRequest(ClientError):
    code = INVALID_REQUEST


class MethodNotFound(ClientError):
    code = METHOD_NOT_FOUND
    status = 404


class InvalidParams(ClientError):
    code = INVALID_PARAMS


class HeaderMismatch(ClientError):
    code = HEADER_MISMATCH


class UnsupportedProtocolVersion(ClientError):
    code = UNSUPPORTED_PROTOCOL_VERSION


class BodyTooLarge(ClientError):
    status = 413


class NotAcceptable(ClientError):
    status = 406


class UnsupportedMediaType(ClientError):
    status = 415


class HttpMethodNotAllowed(ClientError):
    status = 405


class InvalidHost(ClientError):
    status = 421


class InvalidOrigin(ClientError):
    status = 403


class UnknownEndpoint(ClientError):
    status = 404


class SessionRequired(ClientError):
    status = 400


class SessionNotFound(ClientError):
    status = 404


class Unauthorized(ClientError):
    """The request's credentials are missing, invalid, or lack scopes (RFC 6750 §3).

    ``challenge`` is the complete ``WWW-Authenticate`` value; render sends it as is."""

    code = UNAUTHORIZED
    status = 401
    event = "call.unauthorized"

    def __init__(self, message: str, *, challenge: str, status: int = 401, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.challenge = challenge
        self.http_status = status


class PolicyDenied(ClientError):
    code = POLICY_DENIED
    status = 200
    event = "call.denied"


class SuppliedTokenMissing(ClientError):
    """A ``client_supplied`` upstream's tool was called without ``_meta.authorization``."""

    code = SUPPLIED_TOKEN_MISSING
    status = 200
    event = "call.unauthorized"

    def __init__(self, tool: str | None, reason: str) -> None:
        super().__init__("no token provided", data={"tool": tool, "reason": reason})


class SuppliedTokenRejected(ClientError):
    """The upstream refused the token the client supplied (401/403): unauthorized or insufficient."""

    code = SUPPLIED_TOKEN_REJECTED
    status = 200
    event = "call.unauthorized"

    def __init__(self, tool: str | None, reason: str) -> None:
        super().__init__("the provided token was rejected", data={"tool": tool, "reason": reason})


class UpstreamError(BastionError):
    """An upstream failed. ``status`` stays 200: the client gets a JSON-RPC error for its request."""

    status = 200
    event = "call.failed"

    def __init__(self, upstream: str, message: str, *, detail: str = "") -> None:
        super().__init__(f"upstream '{upstream}': {message}", detail=detail, data={"upstream": upstream})
        self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    code = UPSTREAM_UNAVAILABLE


class UpstreamTimeout(UpstreamError):
    code = UPSTREAM_TIMEOUT


class UpstreamFailed(UpstreamError):
    code = UPSTREAM_FAILED


class UpstreamRejectedCredentials(UpstreamFailed):
    """The upstream answered 401/403 to what Bastion sent (a static secret or a user's token).
    ``wanted_scopes``: what a 403 ``insufficient_scope`` challenge named (RFC 6750 §3.1), for a
    step-up; the challenge itself stays between Bastion and the upstream."""

    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        detail: str = "",
        upstream_status: int = 401,
        wanted_scopes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(upstream, message, detail=detail)
        self.upstream_status = upstream_status
        self.wanted_scopes = wanted_scopes

    @classmethod
    def from_response(
        cls, upstream: str, status: int, challenges: Iterable[str]
    ) -> UpstreamRejectedCredentials:
        params = bearer_params(challenges) if status == 403 else {}
        wanted = challenge_scopes(params) if params.get("error") == "insufficient_scope" else ()
        return cls(
            upstream,
            f"rejected Bastion's credentials (HTTP {status})",
            upstream_status=status,
            wanted_scopes=wanted,
        )


class UpstreamCredentialsUnavailable(UpstreamError):
    """Bastion could not obtain the credential this user needs at this upstream (the message
    says what the user can do about it; the detail, logged only, says why)."""

    code = UPSTREAM_CREDENTIALS


class ConnectionRequired(UpstreamCredentialsUnavailable):
    """The user has no usable credential for ``connection`` (never connected, disconnected, or
    the provider refused the refresh token): they must open ``url`` in their browser, signed in
    to Bastion as themselves. The URL is a handle, not a credential, and names nobody."""

    event = "call.unauthorized"

    def __init__(
        self,
        upstream: str,
        *,
        connection: str,
        label: str,
        url: str,
        elicitation_id: str,
        reconnect: bool = False,
        scopes: tuple[str, ...] = (),
    ) -> None:
        """``scopes``: a step-up: the connection works, but the call needs these permissions too."""
        verb = "Reconnect" if reconnect or scopes else "Connect"
        super().__init__(upstream, f"{verb} your {label} account to continue: open {url}")
        self.connection = connection
        self.label = label
        self.url = url
        self.elicitation_id = elicitation_id
        self.reconnect = reconnect or bool(scopes)
        self.scopes = scopes
        self.prompt = (
            f"This needs more permissions on your {label} account ({', '.join(scopes)}): "
            "reconnect it to Bastion to continue."
            if scopes
            else f"{verb} your {label} account to Bastion to continue."
        )


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class Conflict(Exception):
    """A store refused a write that would break a uniqueness rule (a taken username, a reused key).

    Not a BastionError: it is raised by storage, and the layer above decides what the
    client hears (usually nothing more specific than "cannot create this user")."""
