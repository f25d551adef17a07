"""`bastion serve` and `bastion demo`: run the gateway under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
import yaml

from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, console, load_settings
from bastion.cli.logs import configure_logging
from bastion.config.auth import Auth
from bastion.config.model import Settings, StdioUpstream, Upstream
from bastion.idp.users import LocalUsers
from bastion.store import open_store


def _run(settings: Settings, config_path: Path | None = None) -> None:
    from bastion.app import create_app  # the gateway's imports are paid only when serving

    configure_logging(settings.logging.level, settings.logging.format)
    config = uvicorn.Config(
        create_app(settings, config_path=config_path),
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
    _run(load_settings(config), config)


DEMO_USER = "demo"


def demo_settings(port: int, state_dir: Path) -> Settings:
    return Settings(
        public_url=f"http://127.0.0.1:{port}",
        listen=f"127.0.0.1:{port}",
        storage=f"sqlite:///{state_dir / 'bastion.db'}",
        auth=Auth(master_key_file=str(state_dir / "master.key")),
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


async def _demo_user(settings: Settings, state_dir: Path) -> str:
    """The demo user's password: created (random, kept in state_dir/demo-password) on first start."""
    secret_file = state_dir / "demo-password"
    store = await open_store(settings.storage)
    try:
        users = LocalUsers(store.users)
        if secret_file.exists() and await users.find(DEMO_USER) is not None:
            return secret_file.read_text(encoding="utf-8").strip()
        password = secrets.token_urlsafe(12)
        if await users.find(DEMO_USER) is None:
            await users.add(DEMO_USER, password, display_name="Demo User", groups=["demo"])
        else:
            await users.set_password(DEMO_USER, password)
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        return password
    finally:
        await store.close()


def _connect_help(port: int, config: Path, password: str) -> str:
    url = f"http://127.0.0.1:{port}/mcp/demo"
    return f"""
[bold green]Bastion demo is running.[/bold green] State lives in {config.parent}/

  MCP endpoint (demo upstream):  [bold]{url}[/bold]
  Aggregate endpoint (all):      http://127.0.0.1:{port}/mcp
  Sign in as:                    [bold]{DEMO_USER}[/bold] / [bold]{password}[/bold]

[bold]Connect a client[/bold]
  MCP Inspector:   npx @modelcontextprotocol/inspector
                   then Transport "Streamable HTTP", URL {url}
  Claude Desktop (claude_desktop_config.json, via mcp-remote):
    {{"mcpServers": {{"bastion-demo": {{"command": "npx", "args": ["mcp-remote", "{url}"]}}}}}}
  Clients discover Bastion's sign-in by themselves (OAuth: metadata, registration, PKCE);
  your browser opens Bastion's sign-in page, then a consent page for the client.

  Audit log:       .venv/bin/bastion audit tail -f -c {config}
  More users:      .venv/bin/bastion users add alice --group sales -c {config}

Press Ctrl+C to stop.
"""


def demo(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1 only).")] = 8080,
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its state.")] = Path(".bastion"),
) -> None:
    """Run Bastion with no configuration: SQLite, built-in users, the bundled demo upstream."""
    state_dir.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(port, state_dir.resolve())
    # the same settings as a file, so admin commands (audit tail, ...) can read this state
    config = state_dir / "demo.yaml"
    as_file = settings.model_dump(mode="json", exclude_defaults=True)
    config.write_text(yaml.safe_dump(as_file, sort_keys=False))
    password = asyncio.run(_demo_user(settings, state_dir.resolve()))
    # soft_wrap: the snippets must stay copy-pasteable whatever the terminal width
    console.print(_connect_help(port, config, password), highlight=False, soft_wrap=True)
    logging.getLogger("bastion").info("demo state in %s", state_dir.resolve())
    _run(settings)
