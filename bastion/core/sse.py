"""Server-Sent Events framing (WHATWG HTML §9.2), the part MCP's Streamable HTTP uses."""

from __future__ import annotations

from dataclasses import dataclass


def sse_event(data: bytes, event_id: str | None = None) -> bytes:
    head = b"event: message\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None
    retry: int | None


class SseDecoder:
    """Incremental decoder: feed bytes as they arrive, get complete events back."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = self._line_end()
            if cut is None:
                return events
            end, skip = cut
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[end + skip :]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line_end(self) -> tuple[int, int] | None:
        n = self._buffer.find(b"\n")
        r = self._buffer.find(b"\r")
        if r != -1 and (n == -1 or r < n):
            if r + 1 == len(self._buffer):
                return None  # a lone CR at the end might be the first half of CRLF
            return (r, 2) if self._buffer[r + 1 : r + 2] == b"\n" else (r, 1)
        if n != -1:
            return (n, 1)
        return None

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._data, self._event, self._retry = [], "", None
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None
