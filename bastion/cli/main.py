"""Entry point of the ``bastion`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from bastion._version import __version__
from bastion.cli import audit, clients, config, db, grants, idp, keys, policy, serve, users, vault

app = typer.Typer(
    name="bastion",
    help="Bastion: an authorization gateway for MCP servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(audit.app, name="audit")
app.add_typer(db.app, name="db")
app.add_typer(config.app, name="config")
app.add_typer(users.app, name="users")
app.add_typer(grants.app, name="grants")
app.add_typer(clients.app, name="clients")
app.add_typer(keys.app, name="keys")
app.add_typer(idp.app, name="idp")
app.add_typer(policy.app, name="policy")
app.add_typer(vault.app, name="vault")
app.command()(serve.serve)
app.command()(serve.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bastion {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Bastion: an authorization gateway for MCP servers."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
