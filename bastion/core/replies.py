"""What the upstream stage hands back to the edge for rendering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple

Headers = tuple[tuple[bytes, bytes], ...]


class ByteReply(NamedTuple):
    """Bytes relayed from an HTTP upstream as they arrive (the passthrough fast path)."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes] | None  # None: the body is ``body``
    body: bytes = b""
    is_sse: bool = False
    upstream: str = ""


class MessageReply(NamedTuple):
    """JSON-RPC messages produced by Bastion (relay, bridging, aggregation).

    For a request, the last message is its response; anything before it (progress,
    logging, server→client requests) makes the edge answer with an SSE stream.
    """

    messages: AsyncIterator[dict[str, Any]]
    headers: Headers = ()
    upstream: str = ""
    stream: bool = False  # force SSE (a GET stream)


class EmptyReply(NamedTuple):
    status: int = 202
    headers: Headers = ()
    upstream: str = ""


Reply = ByteReply | MessageReply | EmptyReply
