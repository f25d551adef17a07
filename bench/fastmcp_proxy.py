"""FastMCP 4.1.6's proxy in front of the echo upstream, with FastMCP's own ``JWTVerifier`` (HS256).

What a Python user would pick instead of Bastion. Runs ONLY from the separate venv
``bench/.venv-fastmcp`` (made by the harness from ``bench/fastmcp-reference.lock``); FastMCP is
never a dependency of Bastion.

Modes:
  fresh  ``create_proxy(url)``: the default, a fresh upstream client session per request.
  reuse  ``create_proxy(connected fastmcp.Client(url))``: one upstream session reused for all
         requests (FastMCP's fastest mode; it warns about context mixing under concurrency).

    bench/.venv-fastmcp/bin/python bench/fastmcp_proxy.py --port 9300 --upstream URL --secret S --audience A
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from fastmcp import Client
from fastmcp.server import create_proxy
from fastmcp.server.auth.providers.jwt import JWTVerifier

ISSUER = "https://bench.invalid/issuer"  # same as bench.floor.ISSUER (this file cannot import bench)


async def serve(args: argparse.Namespace) -> None:
    verifier = JWTVerifier(public_key=args.secret, algorithm="HS256", issuer=ISSUER, audience=args.audience)
    run_options = {
        "show_banner": False,
        "transport": "http",
        "host": "127.0.0.1",
        "port": args.port,
        "path": "/mcp",
        "log_level": "warning",
        "json_response": True,
        "stateless_http": True,
        "uvicorn_config": {"loop": "uvloop", "http": "httptools", "access_log": False},
    }
    if args.mode == "fresh":
        proxy = create_proxy(args.upstream, name="fastmcp-bench-proxy", auth=verifier)
        await proxy.run_http_async(**run_options)
        return
    async with Client(args.upstream) as upstream:
        proxy = create_proxy(upstream, name="fastmcp-bench-proxy", auth=verifier)
        await proxy.run_http_async(**run_options)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--mode", choices=["fresh", "reuse"], default="fresh")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
