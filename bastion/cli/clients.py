"""`bastion clients ...`: the OAuth client registrations in the store (config and RFC 7591 DCR).

Also the small helpers `bastion grants` shares: running one action on the configured store,
and making stored values safe to print (DCR metadata is written by whoever registered).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bastion.cli.common import (
    DEFAULT_CONFIG,
    CommandError,
    ConfigOption,
    run_on_store,
)
from bastion.core.records import ClientRecord
from bastion.store import Store

app = typer.Typer(help="Manage registered OAuth clients.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")


def printable(value: str) -> str:
    """``value`` with control characters escaped: an ESC in stored data must not reach the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in value)


def print_table(table: Table) -> None:
    # Markup off: cells are data. Piped: no terminal width to respect, so don't fold values.
    width = None if sys.stdout.isatty() else 200
    Console(highlight=False, width=width).print(table, markup=False)


def when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Source(StrEnum):
    config = "config"
    dcr = "dcr"
    cimd = "cimd"


def _table(records: list[ClientRecord]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("client id", "name", "source", "auth method", "redirect URIs"):
        table.add_column(column, overflow="fold")
    for column in ("created (UTC)", "last used (UTC)", "expires (UTC)"):
        table.add_column(column, no_wrap=True)
    for c in records:
        table.add_row(
            printable(c.client_id),
            printable(c.client_name or ""),
            c.source,
            printable(c.token_endpoint_auth_method),
            printable(" ".join(c.redirect_uris)),
            when(c.created_at),
            when(c.last_used_at),
            when(c.expires_at),
        )
    return table


@app.command("list")
def list_clients(
    source: Annotated[Source | None, typer.Option(help="Only clients registered this way.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Show registered clients, ordered by client id."""
    records = run_on_store(config, lambda store: store.clients.list(source.value if source else None))
    if records:
        print_table(_table(records))
    elif source is Source.cimd:
        out.print("no clients: metadata-document clients are fetched when used, not stored", markup=False)
    else:
        out.print("no clients", markup=False)


@app.command("delete")
def delete(
    client_id: Annotated[str, typer.Argument(help="The client_id to remove.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Remove a client registration (a dynamically registered client has to register again)."""

    async def remove(store: Store) -> ClientRecord:
        record = await store.clients.get(client_id)
        if record is None or not await store.clients.delete(client_id):
            raise CommandError(f"no client '{printable(client_id)}'")
        return record

    record = run_on_store(config, remove)
    out.print(f"client {printable(client_id)} deleted", markup=False)
    if record.source == "config":
        out.print(
            "note: it is in the config file, so the server registers it again at its next start",
            markup=False,
        )
