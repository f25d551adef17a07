"""Helpers shared by CLI commands: the -c/--config option and loading it with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bastion.config import Settings, load_config
from bastion.core.errors import ConfigError

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
