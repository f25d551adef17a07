"""`bastion config validate|schema`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import console
from bastion.config import Settings, load_config
from bastion.config.reference import reference_markdown
from bastion.core.errors import ConfigError

app = typer.Typer(help="Validate the configuration and print its JSON Schema.", no_args_is_help=True)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The configuration file.")] = Path("bastion.yaml"),
) -> None:
    """Check a configuration file; errors name the key. Exit 0 when valid, 2 otherwise."""
    try:
        settings = load_config(file, os.environ)
    except ConfigError as exc:
        console.print(f"[red]invalid:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    names = ", ".join(u.name for u in settings.upstreams) or "none"
    typer.echo(f"{file}: valid ({len(settings.upstreams)} upstreams: {names})")


def schema_json() -> str:
    schema = Settings.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Bastion configuration (bastion.yaml)"
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


@app.command()
def reference() -> None:
    """Print the configuration reference as Markdown (docs/configuration.md)."""
    typer.echo(reference_markdown(), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of bastion.yaml (for editors and CI)."""
    typer.echo(schema_json(), nl=False)
