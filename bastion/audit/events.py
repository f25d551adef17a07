"""The closed audit vocabulary: every AuditRecord.event is one of these ``noun.verb`` names.

Adding an event means adding a constant here and to ``EVENTS``; flow tests assert the
events they expect by these constants, and the recorder refuses any other name.
"""

from __future__ import annotations

# One MCP message through the /mcp pipeline
CALL_FORWARDED = "call.forwarded"  # a request reached the upstream and its answer went back
CALL_FAILED = "call.failed"  # the upstream failed (unavailable, timeout, crash, bad reply)
CALL_REJECTED = "call.rejected"  # the request was malformed or not acceptable (4xx, JSON-RPC error)
CALL_DENIED = "call.denied"  # policy said no
CALL_CANCELLED = "call.cancelled"  # the client went away before the answer (2026-07-28: its cancellation)
CALL_UNAUTHORIZED = "call.unauthorized"  # no, bad or insufficient access token (401/403 challenge)
NOTIFICATION_FORWARDED = "notification.forwarded"
RESPONSE_FORWARDED = "response.forwarded"  # a client's answer to a server→client request

# Legacy-era sessions and their streams
SESSION_CREATED = "session.created"
SESSION_DELETED = "session.deleted"
SESSION_EXPIRED = "session.expired"
STREAM_OPENED = "stream.opened"
STREAM_CLOSED = "stream.closed"

# stdio upstream processes
UPSTREAM_STARTED = "upstream.started"
UPSTREAM_EXITED = "upstream.exited"
UPSTREAM_RESTARTED = "upstream.restarted"

# The gateway itself
CONFIG_LOADED = "config.loaded"
SERVER_STARTED = "server.started"
SERVER_STOPPED = "server.stopped"
POLICY_RELOADED = "policy.reloaded"  # SIGHUP or a policy file changed: the new policy is in force
POLICY_REJECTED = "policy.rejected"  # a reload failed (detail: file:line and why); the old policy stays

# The audit log about itself: gaps are recorded in the chain, not only in a log file
AUDIT_PURGED = "audit.purged"  # retention deleted old records (detail: how many, before when)
AUDIT_DROPPED = "audit.dropped"  # records were lost while the store was failing (detail: how many)

# authorization server (detail: client, reason; never a token, code or secret)
AUTHORIZATION_REQUESTED = "authorization.requested"  # a valid /authorize request, waiting for login/consent
AUTHORIZATION_REFUSED = (
    "authorization.refused"  # /authorize refused (bad client, redirect, PKCE, resource...)
)
AUTHORIZATION_GRANTED = "authorization.granted"  # a code went to the client
AUTHORIZATION_DENIED = "authorization.denied"  # the user pressed Deny
CONSENT_GRANTED = "consent.granted"
CONSENT_REVOKED = "consent.revoked"
LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"
LOGIN_THROTTLED = "login.throttled"
LOGOUT = "login.ended"
TOKEN_ISSUED = "token.issued"  # noqa: S105 - an event name  # access (and refresh) token issued, detail names the grant
TOKEN_REFUSED = "token.refused"  # noqa: S105 - an event name  # token endpoint error (detail: the OAuth error code and why)
TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event name  # RFC 7009, or a refresh-token family revoked after reuse
TOKEN_REUSE_DETECTED = "token.reuse_detected"  # noqa: S105 - an event name  # a used code or rotated refresh token came back
CLIENT_REGISTERED = "client.registered"  # RFC 7591
CLIENT_REFUSED = "client.refused"  # a registration was refused
KEY_ROTATED = "key.rotated"

# per-user downstream connections (the vault; detail: connection, provider error code; never a token)
CONNECTION_CONNECTED = "connection.connected"  # a user connected an account (OAuth) or saved an API key
CONNECTION_DISCONNECTED = "connection.disconnected"  # the user removed a connection
CONNECTION_REFUSED = "connection.refused"  # a connect attempt refused: bad state, other user, provider error

EVENTS: frozenset[str] = frozenset(
    {
        CALL_UNAUTHORIZED,
        AUTHORIZATION_REQUESTED,
        AUTHORIZATION_REFUSED,
        AUTHORIZATION_GRANTED,
        AUTHORIZATION_DENIED,
        CONSENT_GRANTED,
        CONSENT_REVOKED,
        LOGIN_SUCCEEDED,
        LOGIN_FAILED,
        LOGIN_THROTTLED,
        LOGOUT,
        TOKEN_ISSUED,
        TOKEN_REFUSED,
        TOKEN_REVOKED,
        TOKEN_REUSE_DETECTED,
        CLIENT_REGISTERED,
        CLIENT_REFUSED,
        KEY_ROTATED,
        CONNECTION_CONNECTED,
        CONNECTION_DISCONNECTED,
        CONNECTION_REFUSED,
        CALL_FORWARDED,
        CALL_FAILED,
        CALL_REJECTED,
        CALL_DENIED,
        CALL_CANCELLED,
        NOTIFICATION_FORWARDED,
        RESPONSE_FORWARDED,
        SESSION_CREATED,
        SESSION_DELETED,
        SESSION_EXPIRED,
        STREAM_OPENED,
        STREAM_CLOSED,
        UPSTREAM_STARTED,
        UPSTREAM_EXITED,
        UPSTREAM_RESTARTED,
        CONFIG_LOADED,
        SERVER_STARTED,
        SERVER_STOPPED,
        POLICY_RELOADED,
        POLICY_REJECTED,
        AUDIT_PURGED,
        AUDIT_DROPPED,
    }
)
