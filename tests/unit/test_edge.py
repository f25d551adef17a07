"""Edge building blocks: SSE decoding, Host/Origin guard, endpoint paths, naming, era shapes."""

from __future__ import annotations

import pytest

from bastion.config import load_config_text
from bastion.core.errors import InvalidHost, InvalidOrigin
from bastion.core.sse import SseDecoder, sse_event
from bastion.edge.guards import HostGuard
from bastion.pipeline import endpoint_of
from bastion.upstream import naming
from bastion.upstream.eras import discover_from_initialize, strip_envelope, to_modern_response


def test_sse_decoder_handles_split_chunks_and_line_endings() -> None:
    decoder = SseDecoder()
    stream = b'event: message\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r\n: comment\n\nretry: 100\ndata: x\n\n'
    events = []
    for i in range(len(stream)):  # one byte at a time: the worst case for a streaming parser
        events.extend(decoder.feed(stream[i : i + 1]))
    assert [(e.event, e.data, e.id) for e in events] == [("message", '{"a":\n1}', "7"), ("message", "x", "7")]
    assert events[1].retry == 100


def test_sse_round_trip() -> None:
    decoder = SseDecoder()
    (event,) = decoder.feed(sse_event(b'{"jsonrpc":"2.0"}', "3"))
    assert event.data == '{"jsonrpc":"2.0"}'
    assert event.id == "3"


@pytest.fixture
def guard() -> HostGuard:
    return HostGuard.from_settings(
        load_config_text("public_url: https://mcp.example.com\nlisten: 127.0.0.1:8080", {})
    )


def test_host_guard_accepts_own_names(guard: HostGuard) -> None:
    for host in ("mcp.example.com", "mcp.example.com:443", "127.0.0.1:8080", "localhost:8080"):
        guard.check(host, None)
    guard.check("127.0.0.1:8080", "https://mcp.example.com")


@pytest.mark.parametrize("host", ["evil.example", "mcp.example.com:8443", "127.0.0.1:9999", None])
def test_host_guard_rejects_other_hosts(guard: HostGuard, host: str | None) -> None:
    with pytest.raises(InvalidHost):
        guard.check(host, None)


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://mcp.example.com.evil.example"])
def test_host_guard_rejects_other_origins(guard: HostGuard, origin: str) -> None:
    with pytest.raises(InvalidOrigin):
        guard.check("mcp.example.com", origin)


def test_endpoint_paths() -> None:
    assert endpoint_of("/mcp") == (True, None)
    assert endpoint_of("/mcp/") == (True, None)
    assert endpoint_of("/mcp/time") == (True, "time")
    assert endpoint_of("/mcp/time/extra") == (False, None)
    assert endpoint_of("/mcpx") == (False, None)


def test_naming_is_reversible_and_collision_free() -> None:
    assert naming.split_tool_name(naming.tool_name("gh", "create__issue")) == ("gh", "create__issue")
    assert naming.split_tool_name("nounderscore") is None
    uri = naming.resource_uri("files", "git+ssh://host/repo")
    assert uri == "files+git+ssh://host/repo"
    assert naming.split_resource_uri(uri) == ("files", "git+ssh://host/repo")
    assert naming.split_resource_uri("file:///etc/passwd") is None
    assert naming.split_resource_uri("https+x://a") == (
        "https",
        "x://a",
    )  # names are checked against upstreams


def test_modern_response_gets_result_type_and_cache_hints() -> None:
    legacy = {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}
    modern = to_modern_response("tools/list", legacy)
    assert modern["result"] == {"tools": [], "resultType": "complete", "cacheScope": "private", "ttlMs": 0}
    call = to_modern_response("tools/call", {"jsonrpc": "2.0", "id": 1, "result": {"content": []}})
    assert call["result"] == {"content": [], "resultType": "complete"}
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}
    assert to_modern_response("tools/call", error) == error


def test_strip_envelope_keeps_other_meta() -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "x",
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 5},
        },
    }
    assert strip_envelope(message)["params"] == {"name": "x", "_meta": {"progressToken": 5}}


def test_discover_from_initialize() -> None:
    result = discover_from_initialize(
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "s", "version": "1"},
        }
    )
    assert result["supportedVersions"] == ["2026-07-28"]
    assert result["capabilities"] == {"tools": {}}
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "s"
