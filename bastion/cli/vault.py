"""`bastion vault ...`: the master keys that keep users' downstream credentials at rest.

Rotating the vault master key, with no downtime:

1. set the new key as ``vault.master_key`` and move the old one to ``vault.previous_master_keys``;
2. restart (or roll) every server: they open records under both keys and seal under the new one;
3. ``bastion vault rotate-key`` re-wraps every record's data key under the new key;
4. once ``bastion vault status`` shows every record under it, remove the old key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.clients import print_table
from bastion.cli.common import DEFAULT_CONFIG, CommandError, ConfigOption, load_settings, run_on_store
from bastion.oauth.keystore import MasterKeyError, load_master_key
from bastion.store import Store
from bastion.vault.envelope import MasterKeys, VaultCipher, key_id
from bastion.vault.keys import VaultKeyError, check_vault_keys, load_vault_keys
from bastion.vault.rotation import RotationResult, rewrap_all

app = typer.Typer(help="Manage the vault of users' downstream credentials.", no_args_is_help=True)
_REFUSALS = (CommandError, MasterKeyError, VaultKeyError)


def _keys(config: Path) -> MasterKeys:
    settings = load_settings(config)
    return load_vault_keys(settings, load_master_key(settings, create=False))


@app.command("status")
def status(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Show how many records are wrapped under each master key, and which key is current."""

    async def action(store: Store) -> tuple[MasterKeys, dict[str, int], str | None]:
        keys = _keys(config)
        counts = await store.vault.count_by_key()
        try:
            await check_vault_keys(store.vault, keys)
        except VaultKeyError as exc:
            return keys, counts, str(exc)
        return keys, counts, None

    keys, counts, problem = run_on_store(config, action, refusals=_REFUSALS)
    current = key_id(keys.current)
    previous = {key_id(k) for k in keys.previous}
    typer.echo(f"current vault master key: {current}")
    table = Table(box=None, pad_edge=False)
    for column in ("key id", "records", "state"):
        table.add_column(column, no_wrap=True)
    for kid in sorted({current, *counts}, key=lambda k: (k != current, k)):
        state = "current" if kid == current else "previous" if kid in previous else "NOT CONFIGURED"
        table.add_row(kid, str(counts.get(kid, 0)), state)
    print_table(table)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    others = sum(n for kid, n in counts.items() if kid != current)
    if others:
        typer.echo(f"{others} records are under a previous key: run `bastion vault rotate-key`")
    else:
        typer.echo(f"all {counts.get(current, 0)} records are under the current key")


@app.command("rotate-key")
def rotate_key(
    batch: Annotated[int, typer.Option(min=1, help="Records read per batch.")] = 100,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for records a refresh is holding.")
    ] = 60.0,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Re-wrap every record's data key under the current master key (vault.master_key); servers
    keep running. Safe to run again: records already under the current key are left alone."""

    async def action(store: Store) -> tuple[str, RotationResult, int]:
        keys = _keys(config)
        await check_vault_keys(store.vault, keys)  # every record must open before any is moved
        cipher = VaultCipher(keys)
        result = await rewrap_all(store.vault, cipher, batch=batch, wait_s=wait)
        return cipher.current_key_id, result, (await store.vault.count_by_key()).get(cipher.current_key_id, 0)

    current, result, under_current = run_on_store(config, action, refusals=_REFUSALS)
    typer.echo(f"re-wrapped {result.rewrapped} records under vault master key {current}")
    typer.echo(f"records under it now: {under_current}")
    if result.busy:
        typer.echo(f"{result.busy} records were being refreshed or changed throughout: run the command again")
    if result.tampered:
        typer.echo(
            f"error: {result.tampered} records do not open (altered in the database) and were left as they "
            "are; their users must connect again",
            err=True,
        )
    if result.busy or result.tampered:
        raise typer.Exit(1)
