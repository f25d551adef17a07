"""`bastion keys ...`: the signing keys of Bastion's access tokens.

Rotation makes a new active key at once; the old key keeps verifying (and stays in the JWKS)
until every token it signed has expired. Running servers pick the new ring up within a few
seconds (they re-read it from the store), so no restart is needed.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.clients import print_table, when
from bastion.cli.common import DEFAULT_CONFIG, CommandError, ConfigOption, load_settings, run_on_store
from bastion.oauth.keys import SigningKey
from bastion.oauth.keystore import KeyRingHolder, MasterKeyError, load_master_key
from bastion.store import Store

app = typer.Typer(help="Manage the keys that sign Bastion's access tokens.", no_args_is_help=True)


class Algorithm(StrEnum):
    ES256 = "ES256"
    EdDSA = "EdDSA"
    RS256 = "RS256"


def _holder(config_path: Path, store: Store) -> KeyRingHolder:
    settings = load_settings(config_path)
    try:
        master = load_master_key(settings, create=False)
    except MasterKeyError as exc:
        raise CommandError(str(exc)) from None
    return KeyRingHolder(
        store, master, alg=settings.auth.signing_alg, max_token_lifetime_s=settings.auth.access_token_ttl
    )


def _state(key: SigningKey, now: float) -> str:
    if key.active:
        return "active (signs new tokens)"
    return "retired (verifies until expiry)" if key.published(now) else "expired"


@app.command("list")
def list_keys(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Show the key ring: which key signs, which still verify, until when."""

    async def action(store: Store) -> list[SigningKey]:
        if await store.signing_keys.load() is None:
            return []
        try:
            ring = await _holder(config, store).load()
        except MasterKeyError as exc:
            raise CommandError(str(exc)) from None
        return list(ring.published_keys())

    keys = run_on_store(config, action)
    if not keys:
        typer.echo("no signing keys yet (the server creates one on its first start)")
        return
    now = time.time()
    table = Table(box=None, pad_edge=False)
    for column in ("kid", "alg", "state", "created (UTC)", "published until (UTC)"):
        table.add_column(column, no_wrap=column != "kid", overflow="fold")
    for key in keys:
        table.add_row(key.kid, key.alg, _state(key, now), when(key.created_at), when(key.not_after))
    print_table(table)


@app.command()
def rotate(
    alg: Annotated[
        Algorithm | None, typer.Option(help="Algorithm of the new key (default: auth.signing_alg).")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Make a new signing key active; the old one keeps verifying until its tokens expire."""

    async def action(store: Store) -> SigningKey:
        try:
            return await _holder(config, store).rotate(alg.value if alg else None)
        except MasterKeyError as exc:
            raise CommandError(str(exc)) from None

    new = run_on_store(config, action)
    typer.echo(f"new active key {new.kid} ({new.alg}); running servers switch within seconds")
