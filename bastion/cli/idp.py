"""`bastion idp ...`: check an identity provider's set-up before users hit it."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from bastion.cli.common import DEFAULT_CONFIG, ConfigOption, load_settings
from bastion.idp.oidc import IdpError, OidcProvider
from bastion.idp.presets import resolve

app = typer.Typer(help="Identity providers users sign in with.", no_args_is_help=True)


def _line(ok: bool, text: str) -> None:
    typer.echo(("  ok    " if ok else "  FIX   ") + text)


async def _test(provider: OidcProvider, expected_issuer: str | None) -> bool:
    good = True
    resolved = provider.provider
    typer.echo(f"{resolved.name} ({resolved.config.preset}): discovery {resolved.discovery_url}")
    try:
        meta = await provider.metadata()
    except IdpError as exc:
        _line(False, f"discovery: {exc.message} ({exc.detail}) — check issuer/tenant/discovery_url")
        return False
    _line(True, f"issuer {meta['issuer']}")
    if expected_issuer and meta["issuer"] != expected_issuer and "{tenantid}" not in str(meta["issuer"]):
        good = False
        _line(False, f"configured issuer {expected_issuer} differs from the IdP's {meta['issuer']}")
    if "S256" not in (meta.get("code_challenge_methods_supported") or ["S256"]):
        good = False
        _line(False, "the IdP does not list PKCE S256 (Bastion always sends it)")
    try:
        count = await provider.signing_key_count()
        _line(True, f"signing keys: {count} in {meta['jwks_uri']}")
    except IdpError as exc:
        good = False
        _line(False, f"signing keys: {exc.message} ({exc.detail})")
    typer.echo(f"  info  register this redirect URI at the IdP: {provider.redirect_uri}")
    outcome = await provider.probe_client_authentication()
    if outcome in ("invalid_grant", "accepted"):
        _line(
            True,
            f"client {resolved.config.client_id} authenticates "
            f"({resolved.config.token_endpoint_auth_method})",
        )
    else:
        good = False
        _line(
            False,
            f"client authentication failed: {outcome} — check client_id, the secret or key, and "
            "token_endpoint_auth_method",
        )
    if resolved.config.preset == "entra":
        typer.echo(
            "  info  Entra: add app roles to the app registration and assign users; Bastion never sends "
            "'resource' to Entra"
        )
    return good


@app.command("test")
def check(
    name: Annotated[str, typer.Argument(help="The identity provider's name in the configuration.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Fetch discovery and keys, show the redirect URI to register, check the client credentials."""
    settings = load_settings(config)
    chosen = [p for p in settings.identity_providers if p.name == name]
    if not chosen:
        known = ", ".join(p.name for p in settings.identity_providers) or "none configured"
        typer.echo(f"no identity provider '{name}' (configured: {known})")
        raise typer.Exit(1)
    provider = OidcProvider(
        resolve(chosen[0]), redirect_uri=f"{settings.public_url}/login/idp/{name}/callback"
    )

    async def run() -> bool:
        try:
            return await _test(provider, chosen[0].issuer)
        finally:
            await provider.aclose()

    if not asyncio.run(run()):
        raise typer.Exit(1)
