"""Helpers shared by CLI commands: the -c/--config option, loading it with clear errors, and
running an admin action on the configured store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from bastion.config import Settings, load_config
from bastion.core.errors import ConfigError
from bastion.store import Store, open_store

T = TypeVar("T")

console = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option("-c", "--config", help="Configuration file shared by the server and admin commands."),
]
DEFAULT_CONFIG = Path("bastion.yaml")


def load_settings(path: Path) -> Settings:
    """Load and validate the config or exit with the error (which names the key)."""
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


class CommandError(Exception):
    """A refusal the admin can act on; the message is printed and the command exits 1."""


def run_on_store(
    config: Path,
    action: Callable[[Store], Awaitable[T]],
    *,
    refusals: tuple[type[Exception], ...] = (CommandError,),
) -> T:
    """Open the configured store, run ``action`` on it, close it; a refusal → message, exit 1."""
    settings = load_settings(config)

    async def main() -> T:
        store = await open_store(settings.storage)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except refusals as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
