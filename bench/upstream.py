"""The echo upstream: the official ``mcp`` low-level server with one ``echo`` tool.

Stateless Streamable HTTP with JSON responses, served by uvicorn (uvloop + httptools). It answers
both protocol eras: legacy (``initialize``, 2025-11-25) and modern (2026-07-28 per-request ``_meta``
envelope plus ``MCP-Protocol-Version`` / ``Mcp-Method`` / ``Mcp-Name`` headers).

    python -m bench.upstream --port 9100
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.applications import Starlette

ECHO_TOOL = types.Tool(
    name="echo",
    description="Return the given text unchanged.",
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)


async def _list_tools(
    _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[ECHO_TOOL])


async def _call_tool(
    _ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    if params.name != "echo":
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"unknown tool {params.name}")], is_error=True
        )
    text = str((params.arguments or {}).get("text", ""))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def create_app() -> Starlette:
    server: Server[Any] = Server(
        "bench-echo", version="1.0.0", on_list_tools=_list_tools, on_call_tool=_call_tool
    )
    return server.streamable_http_app(json_response=True, stateless_http=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.getLogger("mcp").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
