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

# The audit log about itself: gaps are recorded in the chain, not only in a log file
AUDIT_PURGED = "audit.purged"  # retention deleted old records (detail: how many, before when)
AUDIT_DROPPED = "audit.dropped"  # records were lost while the store was failing (detail: how many)

EVENTS: frozenset[str] = frozenset(
    {
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
        AUDIT_PURGED,
        AUDIT_DROPPED,
    }
)
