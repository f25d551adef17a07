"""`bastion db upgrade`: bring the configured database to this version's schema."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, console, load_settings
from bastion.store import upgrade
from bastion.store.sql import redact_url

app = typer.Typer(help="Database schema management.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)


@app.command("upgrade")
def upgrade_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Apply pending schema migrations to the database named by `storage` (safe to repeat)."""
    settings = load_settings(Path(config))
    try:
        revision = upgrade(settings.storage)
    except Exception as exc:
        # Only the first line: driver errors can be long; the URL is shown without its password.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        console.print(
            f"[red]error:[/red] {escape(redact_url(settings.storage))}: {escape(first)}",
            markup=True,
            highlight=False,
        )
        raise typer.Exit(1) from None
    out.print(f"{redact_url(settings.storage)} is at schema revision {revision}", markup=False)
