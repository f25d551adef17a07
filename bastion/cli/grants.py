"""`bastion grants ...`: the consents users gave to OAuth clients (one per user and client).

Consents are stored by user_id; the admin names users by username, looked up in the
built-in directory. A user from an external identity provider has no directory entry, so
a name that is not a known username is taken as the user id itself.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bastion.audit import events
from bastion.cli.clients import print_table, printable, when
from bastion.cli.common import DEFAULT_CONFIG, CommandError, ConfigOption, run_on_store
from bastion.core.records import AuditRecord, ConsentRecord
from bastion.idp.users import LocalUsers
from bastion.store import Store

app = typer.Typer(help="Manage the consents users gave to OAuth clients.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)


async def _resolve(store: Store, name: str) -> tuple[str, bool]:
    """``(user id, known)``: the id of a username (case-insensitive), else ``name`` as an id."""
    user = await LocalUsers(store.users).find(name)
    return (user.user_id, True) if user is not None else (name, False)


async def _consents(store: Store, name: str | None) -> list[tuple[str, ConsentRecord]]:
    """The consents (of one user, if ``name``) with the username to show for each."""
    user_id, known = await _resolve(store, name) if name is not None else (None, True)
    records = await store.consents.list(user_id)
    if not records and not known:
        raise CommandError(f"no user '{printable(user_id or '')}'")
    usernames: dict[str, str] = {}
    for record in records:
        if record.user_id not in usernames:
            user = await store.users.get(record.user_id)
            usernames[record.user_id] = user.username if user is not None else record.user_id
    return sorted(((usernames[r.user_id], r) for r in records), key=lambda row: (row[0], row[1].client_id))


@app.command("list")
def list_grants(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's consents.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Show consents: who allowed which client which scopes, for which resources."""
    rows = run_on_store(config, lambda store: _consents(store, user))
    if not rows:
        out.print("no consents", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("user", "client", "scopes", "resources"):
        table.add_column(column, overflow="fold")
    table.add_column("granted at (UTC)", no_wrap=True)
    for username, c in rows:
        table.add_row(
            printable(username),
            printable(c.client_id),
            printable(" ".join(sorted(c.scopes))),
            printable(" ".join(sorted(c.resources))),
            when(c.granted_at),
        )
    print_table(table)


@app.command("revoke")
def revoke(
    username: Annotated[str, typer.Argument(help="Username (or the user id of an external user).")],
    client_id: Annotated[str, typer.Argument(help="The client the consent was given to.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Withdraw a consent: the client has to ask the user again at its next authorization.
    The user's refresh tokens for the client are revoked too (also without a consent: a
    trusted client never asked for one)."""

    async def withdraw(store: Store) -> tuple[bool, int]:
        user_id, _ = await _resolve(store, username)
        consented = await store.consents.revoke(user_id, client_id)
        families = await store.refresh_tokens.revoke_for(user_id, client_id)
        if not consented and not families:
            raise CommandError(f"{printable(username)} has no consent for client '{printable(client_id)}'")
        await store.audit.append(
            [
                AuditRecord(
                    ts=time.time(),
                    event=events.CONSENT_REVOKED,
                    trace_id="-",
                    method="cli",
                    subject=user_id,
                    client_id=client_id,
                    detail=f"bastion grants revoke; {families} refresh-token families revoked",
                )
            ]
        )
        return consented, families

    consented, families = run_on_store(config, withdraw)
    who = f"{printable(username)} for {printable(client_id)}"
    out.print(f"consent of {who} revoked" if consented else f"no consent of {who}", markup=False)
    out.print(f"refresh-token families revoked: {families}", markup=False)
