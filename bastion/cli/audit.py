"""`bastion audit tail` and `bastion audit verify`: read the audit log of the configured store."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.audit.chain import verify_store
from bastion.audit.recorder import jsonl_line
from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, console, load_settings
from bastion.core.records import StoredAuditRecord
from bastion.store import SchemaOutOfDate, Store, open_store

app = typer.Typer(help="Read the audit log.", no_args_is_help=True)
out = Console(highlight=False)


async def _open(config: Path) -> Store:
    settings = load_settings(config)
    try:
        # migrate=False: reading the log must never change the schema.
        return await open_store(settings.storage, migrate=False)
    except SchemaOutOfDate as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def _table(items: list[StoredAuditRecord]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("seq", "time (UTC)", "event", "subject", "endpoint", "method", "name", "status", "ms"):
        table.add_column(column, no_wrap=column in ("seq", "time (UTC)", "event"), overflow="fold")
    for item in items:
        rec = item.record
        when = datetime.fromtimestamp(rec.ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        table.add_row(
            str(item.seq),
            when,
            rec.event,
            rec.subject or "",
            rec.endpoint or rec.upstream or "",
            rec.method or "",
            rec.name or "",
            "" if rec.status is None else str(rec.status),
            "" if rec.latency_ms is None else f"{rec.latency_ms:.1f}",
        )
    return table


def _emit(items: list[StoredAuditRecord], as_json: bool) -> None:
    if not items:
        return
    if as_json:
        sys.stdout.buffer.write(b"".join(jsonl_line(item) for item in items))
        sys.stdout.buffer.flush()
    else:
        # Markup off: record fields are data, a "[red]" in a tool name stays literal.
        # Piped to a file or pager: no terminal width to respect, so don't squeeze columns.
        width = None if sys.stdout.isatty() else 200
        Console(highlight=False, width=width).print(_table(items), markup=False)


async def _tail(config: Path, lines: int, follow: bool, as_json: bool, interval: float) -> None:
    store = await _open(config)
    try:
        items = await store.audit.tail(limit=lines)
        _emit(items, as_json)
        if not follow:
            return
        if items:
            after = items[-1].seq
        else:
            last = await store.audit.last()
            after = last.seq if last else 0
        while True:  # follow: poll; any replica may append, so there is nothing to subscribe to
            await asyncio.sleep(interval)
            items = await store.audit.tail(limit=1000, after_seq=after)
            _emit(items, as_json)
            if items:
                after = items[-1].seq
    finally:
        await store.close()


@app.command("tail")
def tail(
    config: ConfigOption = DEFAULT_CONFIG,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many of the newest records.")] = 20,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new records.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls with -f.")
    ] = 1.0,
) -> None:
    """Print the newest audit records (with -f, keep following until Ctrl-C)."""
    try:
        asyncio.run(_tail(Path(config), lines, follow, as_json, interval))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


async def _verify(config: Path) -> bool:
    store = await _open(config)
    try:
        result = await verify_store(store.audit)
    finally:
        await store.close()
    if result.ok:
        out.print(result.describe())
    else:
        console.print(f"[red]{escape(result.describe())}[/red]", markup=True, highlight=False)
    return result.ok


@app.command("verify")
def verify(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Walk the whole hash chain; exit 1 at the first broken link."""
    if not asyncio.run(_verify(Path(config))):
        raise typer.Exit(1)
