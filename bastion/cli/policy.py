"""`bastion policy test|lint|schema|show`: try, check and read the tool-level policy.

``test`` builds a principal (the user as the store knows them: groups, roles, e-mail and the
declared attributes; flags override), asks the engine
about one call and prints the decision with the engine's account of it. Exit codes: 0 allow,
1 deny or step-up, 2 configuration error. ``lint`` loads and validates every policy (errors
name the file and line, exit 2) and warns about rules that can never match (exit 1).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, console, load_settings
from bastion.config import Settings
from bastion.core.attributes import AttributeValue, coerce, typed
from bastion.core.errors import ConfigError
from bastion.core.records import Era, InboundCall, Principal, UserRecord, request_call
from bastion.idp.presets import resolve
from bastion.idp.users import LocalUsers
from bastion.oauth.token import user_roles
from bastion.policy.compiler import cedar_text
from bastion.policy.engine import CedarPolicy
from bastion.policy.lint import Known, lint
from bastion.policy.loader import load_policy
from bastion.policy.schema import schema_text
from bastion.policy.source import load_sources
from bastion.store import open_store

app = typer.Typer(help="Try, check and read the tool-level policy.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)


class EraName(StrEnum):
    legacy = "legacy"
    modern = "modern"


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _engine(settings: Settings) -> CedarPolicy | None:
    """The configured engine, None when no policy is configured; exit 2 on an invalid policy."""
    try:
        engine = load_policy(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return engine if isinstance(engine, CedarPolicy) else None


# -- what the store knows ---------------------------------------------------------------------


@dataclass
class Directory:
    users: list[UserRecord] = field(default_factory=list)
    clients: set[str] = field(default_factory=set)
    note: str | None = None  # why the store could not be read


def _sqlite_missing(url: str) -> bool:
    if not url.startswith("sqlite"):
        return False
    path = url.split(":///", 1)[-1]
    return bool(path) and path != ":memory:" and not Path(path).exists()


def _directory(settings: Settings) -> Directory:
    """Users and registered clients, read without changing anything (no store: empty)."""
    if _sqlite_missing(settings.storage):
        return Directory(note="the store does not exist yet (no users, no registered clients)")

    async def read() -> Directory:
        store = await open_store(settings.storage, migrate=False)
        try:
            users = await LocalUsers(store.users).list()
            return Directory(users, {c.client_id for c in await store.clients.list()})
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except Exception as exc:  # a CLI aid: say why and go on without the store
        return Directory(note=f"cannot read the store: {exc}")


# -- bastion policy test ----------------------------------------------------------------------


def _split(values: list[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    return frozenset(v for item in values for v in item.replace(",", " ").split())


def _attr_overrides(settings: Settings, items: list[str] | None) -> dict[str, AttributeValue]:
    """``--attr KEY=VALUE`` flags, each converted to its declared type (else exit 2)."""
    declared = settings.policy.user_attributes
    out: dict[str, AttributeValue] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _fail(f"--attr {item!r} is not KEY=VALUE")
        kind = declared.get(key)
        if kind is None:
            names = ", ".join(sorted(declared)) or "none"
            raise _fail(f"--attr {key}: not declared in policy.user_attributes (declared: {names})")
        value = coerce(text, kind)
        if value is None:
            raise _fail(f"--attr {key}: {text!r} is not a valid {kind} value")
        out[key] = value
    return out


def _attributes(
    settings: Settings, record: UserRecord | None, overrides: dict[str, AttributeValue]
) -> tuple[tuple[str, AttributeValue], ...]:
    stored = typed(record.attributes, settings.policy.user_attributes) if record else {}
    return tuple(sorted({**stored, **overrides}.items(), key=lambda pair: pair[0]))


def _principal(
    settings: Settings,
    *,
    user: str | None,
    client: str | None,
    scopes: str | None,
    groups: frozenset[str] | None,
    roles: frozenset[str] | None,
    email: str | None,
    attrs: dict[str, AttributeValue] | None = None,
) -> tuple[Principal, list[str]]:
    notes: list[str] = []
    granted = frozenset(scopes.split()) if scopes is not None else frozenset(settings.auth.scopes)
    if scopes is None:
        notes.append("scopes: every scope in auth.scopes (use --scopes to try a narrower token)")
    if user is None:
        if attrs:
            notes.append("--attr describes a user: ignored without --user")
        if client is None:
            notes.append("no --user and no --client: an unauthenticated caller")
            return Principal(subject="anonymous", scopes=granted, groups=groups or frozenset()), notes
        notes.append(f"no --user: client '{client}' acting for itself (client credentials)")
        principal = Principal(subject=client, client_id=client, scopes=granted, authenticated=True)
        return principal, notes
    directory = _directory(settings)
    if directory.note:
        notes.append(directory.note)
    wanted = user.strip().casefold()  # usernames are stored normalized; ids are exact
    record = next((u for u in directory.users if u.user_id == user or u.username == wanted), None)
    if record is None:
        notes.append(f"user '{user}' is not in the store: only the flags describe them")
    else:
        notes.append(f"user '{record.username}' found in the store ({record.user_id})")
    principal = Principal(
        subject=record.user_id if record else user,
        client_id=client,
        scopes=granted,
        groups=groups if groups is not None else (record.groups if record else frozenset()),
        roles=roles if roles is not None else (frozenset(user_roles(record)) if record else frozenset()),
        authenticated=True,
        username=record.username if record else user,
        email=email if email is not None else (record.email if record else None),
        attributes=_attributes(settings, record, attrs or {}),
    )
    return principal, notes


def _call(
    method: str, key: str, name: str, *, endpoint: str | None, args: dict[str, Any], era: Era
) -> InboundCall:
    params: dict[str, Any] = {key: name}
    if method in ("tools/call", "prompts/get"):
        params["arguments"] = args
    return request_call(endpoint, method, params, era=era, trace_id="policy-test")


def _what(tool: str | None, prompt: str | None, resource: str | None) -> tuple[str, str, str]:
    """(JSON-RPC method, the params key naming the item, the name)."""
    asked = {"tools/call": tool, "prompts/get": prompt, "resources/read": resource}
    given = [(method, name) for method, name in asked.items() if name is not None]
    if len(given) != 1:
        raise _fail("name exactly one of --tool, --prompt or --resource")
    method, name = given[0]
    return method, "uri" if method == "resources/read" else "name", name


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"--args is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _fail('--args must be a JSON object, e.g. \'{"repo": "acme/web"}\'')
    return value


@app.command("test")
def check(  # noqa: PLR0917 - typer maps parameters to options
    tool: Annotated[
        str | None,
        typer.Option(help="Tool: <upstream>__<tool> as on /mcp, or the tool's own name with --upstream."),
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt (named like --tool) instead of a tool.")] = None,
    resource: Annotated[
        str | None, typer.Option(help="Resource URI (<upstream>+<uri>, or the URI with --upstream).")
    ] = None,
    upstream: Annotated[str | None, typer.Option(help="The upstream, when the name is its own.")] = None,
    user: Annotated[
        str | None,
        typer.Option(
            help="Username or user id (looked up in the store for groups, roles, e-mail and attributes)."
        ),
    ] = None,
    client: Annotated[str | None, typer.Option(help="OAuth client id the call comes through.")] = None,
    args: Annotated[str, typer.Option("--args", help="The call's arguments as a JSON object.")] = "{}",
    scopes: Annotated[
        str | None, typer.Option(help="The token's scopes, space-separated (default: all of auth.scopes).")
    ] = None,
    groups: Annotated[
        list[str] | None,
        typer.Option(help="Groups (replace the stored ones); repeatable or comma-separated."),
    ] = None,
    roles: Annotated[list[str] | None, typer.Option(help="Roles; repeatable or comma-separated.")] = None,
    email: Annotated[str | None, typer.Option(help="E-mail address (replaces the stored one).")] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option(
            "--attr",
            help="User attribute KEY=VALUE (declared in policy.user_attributes; replaces the stored "
            "value; a set: comma-separated); repeatable.",
        ),
    ] = None,
    era: Annotated[EraName, typer.Option(help="Protocol era of the call.")] = EraName.modern,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Print what the policy decides about one call, and why. Exit 0 allow, 1 deny or step-up."""
    method, key, name = _what(tool, prompt, resource)
    arguments = _arguments(args)
    settings = load_settings(config)
    engine = _engine(settings)
    overrides = _attr_overrides(settings, attr)
    principal, notes = _principal(
        settings,
        user=user,
        client=client,
        scopes=scopes,
        groups=_split(groups),
        roles=_split(roles),
        email=email,
        attrs=overrides,
    )
    call = _call(method, key, name, endpoint=upstream, args=arguments, era=Era(era.value))
    for note in notes:
        out.print(f"note: {note}", markup=False)
    if engine is None:
        out.print("decision: ALLOW (no policy configured: every call is allowed)", markup=False)
        return
    out.print(engine.explain(principal, call), markup=False)
    decision = engine.decide(principal, call)
    if decision.step_up and settings.auth.enabled:
        out.print(f"  the 403 challenge: {_challenge(settings, upstream, decision.step_up)}", markup=False)
    if not decision.allowed:
        raise typer.Exit(1)


def _challenge(settings: Settings, upstream: str | None, step_up: tuple[str, ...]) -> str:
    """What the endpoint's 403 names: its own required scopes, then the rule's (as authn does)."""
    per_upstream = {u.name: u.required_scopes for u in settings.upstreams}
    extra = per_upstream.get(upstream, []) if upstream else [s for v in per_upstream.values() for s in v]
    scopes = dict.fromkeys([*settings.auth.required_scopes, *extra, *step_up])
    endpoint = f"/mcp/{upstream}" if upstream else "/mcp"
    return f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}" (at {endpoint})'


# -- bastion policy lint ----------------------------------------------------------------------


def _attribute_values(settings: Settings, directory: Directory) -> frozenset[tuple[str, str | int | bool]]:
    out: set[tuple[str, str | int | bool]] = set()
    for user in directory.users:
        for name, value in typed(user.attributes, settings.policy.user_attributes).items():
            if isinstance(value, tuple):
                out.update((name, v) for v in value)
            else:
                out.add((name, value))
    return frozenset(out)


def _known(settings: Settings, directory: Directory) -> Known:
    return Known(
        granted_groups=frozenset(
            g for p in settings.identity_providers for grant in p.grants for g in grant.groups
        ),
        user_groups=frozenset(g for u in directory.users for g in u.groups),
        users=frozenset(
            v for u in directory.users for v in (u.username, u.user_id, u.email) if v is not None
        ),
        clients=frozenset({c.client_id for c in settings.clients} | directory.clients),
        roles=frozenset(r for u in directory.users for r in user_roles(u)),
        idp_roles=any(resolve(p).roles_claim for p in settings.identity_providers),
        attribute_values=_attribute_values(settings, directory),
        idp_attributes=frozenset(n for p in settings.identity_providers for n in p.claims.attributes),
    )


@app.command("lint")
def lint_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate every policy (errors: exit 2) and warn about rules that can never match (exit 1)."""
    settings = load_settings(config)
    engine = _engine(settings)
    sources = load_sources(settings)  # valid: the engine was built from them
    directory = _directory(settings)
    if directory.note:
        out.print(f"note: {directory.note}", markup=False)
    findings = lint(sources.rules, _known(settings, directory))
    for finding in findings:
        out.print(f"warning: {finding}", markup=False)
    policies = len(engine.compiled.entries) if engine is not None else 0
    summary = f"{len(sources.rules)} rules, {len(sources.cedar)} raw Cedar policies ({policies} compiled)"
    out.print(f"{config}: {summary}; {len(findings)} warnings", markup=False)
    if findings:
        raise typer.Exit(1)


# -- bastion policy schema / show -------------------------------------------------------------


@app.command()
def schema(
    config: Annotated[
        Path | None,
        typer.Option(
            "-c",
            "--config",
            help="Include the user attributes this configuration declares and the argument names "
            "its rules constrain.",
        ),
    ] = None,
) -> None:
    """Print the Cedar schema policies are validated against (for raw .cedar files)."""
    if config is None:
        typer.echo(schema_text(frozenset()), nl=False)
        return
    settings = load_settings(config)
    engine = _engine(settings)
    fallback = schema_text(frozenset(), settings.policy.user_attributes)
    typer.echo(engine.compiled.schema if engine is not None else fallback, nl=False)


@app.command()
def show(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print the whole policy as Cedar: the YAML rules compiled, then the raw Cedar policies."""
    engine = _engine(load_settings(config))
    if engine is None:
        typer.echo("# no policy configured: every call is allowed")
        return
    typer.echo(cedar_text(engine.compiled), nl=False)
