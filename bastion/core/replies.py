"""What the upstream stage hands back to the edge for rendering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class ByteReply:
    """Bytes relayed from an HTTP upstream as they arrive (the passthrough fast path)."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes] | None  # None: the body is ``body``
    body: bytes = b""
    is_sse: bool = False
    upstream: str = ""


@dataclass(frozen=True, slots=True)
class MessageReply:
    """JSON-RPC messages produced by Bastion (relay, bridging, aggregation).

    For a request, the last message is its response; anything before it (progress,
    logging, server→client requests) makes the edge answer with an SSE stream.
    """

    messages: AsyncIterator[dict[str, Any]]
    headers: Headers = ()
    upstream: str = ""
    stream: bool = False  # force SSE (a GET stream)


@dataclass(frozen=True, slots=True)
class EmptyReply:
    status: int = 202
    headers: Headers = ()
    upstream: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


Reply = ByteReply | MessageReply | EmptyReply
