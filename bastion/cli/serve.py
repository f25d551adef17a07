"""`bastion serve` and `bastion demo`: run the gateway under uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
import yaml

from bastion.app import create_app
from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, console, load_settings
from bastion.cli.logs import configure_logging
from bastion.config.model import Settings, StdioUpstream, Upstream


def _run(settings: Settings) -> None:
    configure_logging(settings.logging.level, settings.logging.format)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=settings.edge.trust_forwarded_headers,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(1)


def serve(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run Bastion with the given configuration file."""
    _run(load_settings(config))


def demo_settings(port: int, state_dir: Path) -> Settings:
    return Settings(
        public_url=f"http://127.0.0.1:{port}",
        listen=f"127.0.0.1:{port}",
        storage=f"sqlite:///{state_dir / 'bastion.db'}",
        upstreams=[
            Upstream(
                name="demo",
                title="Bastion demo server (notes, time)",
                stdio=StdioUpstream(
                    command=sys.executable,
                    args=["-m", "bastion.demo.server", "--notes-file", str(state_dir / "demo-notes.json")],
                ),
            )
        ],
    )


def _connect_help(port: int, config: Path) -> str:
    url = f"http://127.0.0.1:{port}/mcp/demo"
    return f"""
[bold green]Bastion demo is running.[/bold green] State lives in {config.parent}/

  MCP endpoint (demo upstream):  [bold]{url}[/bold]
  Aggregate endpoint (all):      http://127.0.0.1:{port}/mcp

[bold]Connect a client[/bold]
  MCP Inspector:   npx @modelcontextprotocol/inspector
                   then Transport "Streamable HTTP", URL {url}
  Claude Desktop (claude_desktop_config.json, via mcp-remote):
    {{"mcpServers": {{"bastion-demo": {{"command": "npx", "args": ["mcp-remote", "{url}"]}}}}}}
  Python SDK (.venv/bin/python, then paste):

import anyio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

async def main():
    async with Client(streamable_http_client("{url}")) as c:
        print(await c.call_tool("add_note", {{"title": "hello", "body": "from Bastion"}}))

anyio.run(main)

  Audit log:       .venv/bin/bastion audit tail -f -c {config}

Authentication is OFF in the demo (loopback only). Press Ctrl+C to stop.
"""


def demo(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1 only).")] = 8080,
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its state.")] = Path(".bastion"),
) -> None:
    """Run Bastion with no configuration: SQLite, the bundled demo upstream, no network."""
    state_dir.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(port, state_dir.resolve())
    # the same settings as a file, so admin commands (audit tail, ...) can read this state
    config = state_dir / "demo.yaml"
    as_file = settings.model_dump(mode="json", exclude_defaults=True)
    config.write_text(yaml.safe_dump(as_file, sort_keys=False))
    # soft_wrap: the snippets must stay copy-pasteable whatever the terminal width
    console.print(_connect_help(port, config), highlight=False, soft_wrap=True)
    logging.getLogger("bastion").info("demo state in %s", state_dir.resolve())
    _run(settings)
