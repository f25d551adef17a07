"""`bastion users ...`: the built-in user directory (local logins with argon2id hashes)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bastion.cli.clients import print_table
from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, run_on_store
from bastion.core.records import UserRecord
from bastion.idp.users import LocalUsers, UserError
from bastion.store import Store

app = typer.Typer(help="Manage Bastion's built-in users.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")

PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from standard input (never from the command line)."
    ),
]


def _run(config: Path, action: Callable[[LocalUsers], Awaitable[T]]) -> T:
    return _run_on_store(config, lambda store: action(LocalUsers(store.users)))


def _run_on_store(config: Path, action: Callable[[Store], Awaitable[T]]) -> T:
    return run_on_store(config, action, refusals=(UserError,))


def _lock_out(username: str, *, delete: bool) -> Callable[[Store], Awaitable[int]]:
    """Disable (or delete) the user, then revoke all their refresh-token families; returns
    how many. In this order: the token endpoint refuses a disabled user new families."""

    async def action(store: Store) -> int:
        users = LocalUsers(store.users)
        user = await users.find(username)
        if delete:
            await users.remove(username)  # UserError for an unknown user
        else:
            await users.set_disabled(username, True)
        if user is None:
            return 0
        await store.idp_sessions.delete_for_user(user.user_id)  # their IdP sign-ins end too
        if delete:
            await store.vault.delete_for_user(user.user_id)  # and their downstream credentials
        return await store.refresh_tokens.revoke_for(user.user_id)

    return action


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@app.command("add")
def add(  # noqa: PLR0917 - typer maps parameters to options
    username: Annotated[str, typer.Argument(help="Login name (case-insensitive).")],
    password_stdin: PasswordStdin = False,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Group membership; repeatable.")
    ] = None,
    display_name: Annotated[str, typer.Option(help="Name shown on consent pages.")] = "",
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option(
            "--attr", "-a", help="Attribute KEY=VALUE for policies (e.g. department=sales); repeatable."
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Create a user who signs in with a password."""
    attributes: dict[str, str] = {}
    for item in attr or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            out.print(f"--attr {item!r} is not KEY=VALUE", markup=False)
            raise typer.Exit(2)
        attributes[key.strip()] = value
    password = _read_password(password_stdin)
    user = _run(
        config,
        lambda users: users.add(
            username,
            password,
            display_name=display_name,
            email=email,
            groups=group or (),
            attributes=attributes,
        ),
    )
    out.print(f"added {user.username} ({user.user_id})", markup=False)


@app.command("list")
def list_users(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Show every user with its groups, attributes, source and state."""

    records: list[UserRecord] = _run(config, lambda users: users.list())
    table = Table("username", "user id", "display name", "groups", "attributes", "source", "state")
    for user in records:
        state = "disabled" if user.disabled else "active"
        # what the admin set; what an identity provider sent (idp_*) is kept but not listed
        attributes = ", ".join(
            f"{k}={v}"
            for k, v in sorted(user.attributes.items())
            if not k.startswith("idp") and k != "allowed_scopes"
        )
        table.add_row(
            user.username,
            user.user_id,
            user.display_name,
            ", ".join(sorted(user.groups)),
            attributes,
            user.source,
            state,
        )
    print_table(table)


@app.command("passwd")
def passwd(
    username: Annotated[str, typer.Argument()],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Set a user's password."""
    password = _read_password(password_stdin)
    _run(config, lambda users: users.set_password(username, password))
    out.print(f"password of {username} changed", markup=False)


@app.command("disable")
def disable(username: Annotated[str, typer.Argument()], config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Stop a user from signing in and revoke their refresh tokens (access tokens end at their expiry)."""
    families = _run_on_store(config, _lock_out(username, delete=False))
    out.print(f"{username} disabled", markup=False)
    out.print(f"refresh-token families revoked: {families}", markup=False)


@app.command("enable")
def enable(username: Annotated[str, typer.Argument()], config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Let a disabled user sign in again."""
    _run(config, lambda users: users.set_disabled(username, False))
    out.print(f"{username} enabled", markup=False)


@app.command("delete")
def delete(username: Annotated[str, typer.Argument()], config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Remove a user, revoke their refresh tokens and delete their downstream credentials."""
    families = _run_on_store(config, _lock_out(username, delete=True))
    out.print(f"{username} deleted", markup=False)
    out.print(f"refresh-token families revoked: {families}", markup=False)
