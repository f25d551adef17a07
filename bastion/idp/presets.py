"""Vendor presets for ``identity_providers:`` — data, not subclasses. A preset says where the
discovery document is, which claims hold what, which issuer forms the IdP emits, and its quirks.

Entra ID: v2.0 endpoints; the discovery issuer for ``organizations``/``common`` contains the
literal ``{tenantid}``, replaced by the token's ``tid`` before comparing; v1 tokens carry
``https://sts.windows.net/<tid>/`` and are accepted for the same tenant; ``oid`` is the stable user
id (``sub`` is pairwise per application); app roles arrive in ``roles``; more than ~200 groups
become a "groups overage" (``_claim_names.groups``) instead of a list; RFC 8707 ``resource`` is
never sent (Entra rejects a resource/scope mismatch with AADSTS9010010).
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.config.idp import IdentityProvider


@dataclass(frozen=True, slots=True)
class Preset:
    discovery: str  # template; {issuer} and {tenant} are filled in
    subject: str = "sub"
    email: str = "email"
    name: str = "name"
    groups: str = "groups"
    roles: str = "roles"
    send_resource: bool = False
    entra_issuers: bool = False  # accept {tenantid} templates and v1 issuer forms
    label: str = "your organisation"
    offline: str = "scope"  # how to ask for a refresh token: the offline_access scope, or access_type


PRESETS: dict[str, Preset] = {
    "entra": Preset(
        discovery="https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration",
        subject="oid",
        email="email",
        entra_issuers=True,
        label="Microsoft",
    ),
    "okta": Preset(discovery="{issuer}/.well-known/openid-configuration", label="Okta"),
    "google": Preset(
        discovery="https://accounts.google.com/.well-known/openid-configuration",
        groups="",
        roles="",
        label="Google",
        offline="access_type",  # Google refuses offline_access: access_type=offline + prompt=consent
    ),
    "keycloak": Preset(
        discovery="{issuer}/.well-known/openid-configuration", roles="realm_access.roles", label="Keycloak"
    ),
    "auth0": Preset(discovery="{issuer}.well-known/openid-configuration", label="Auth0"),
    "oidc": Preset(discovery="{issuer}/.well-known/openid-configuration", send_resource=False),
}


@dataclass(frozen=True, slots=True)
class ResolvedProvider:
    """A configured provider with its preset applied: everything the RP needs, no defaults left."""

    config: IdentityProvider
    discovery_url: str
    subject_claim: str
    email_claim: str
    name_claim: str
    groups_claim: str
    roles_claim: str
    send_resource: bool
    entra_issuers: bool
    label: str
    offline: str

    @property
    def name(self) -> str:
        return self.config.name


def resolve(config: IdentityProvider) -> ResolvedProvider:
    preset = PRESETS[config.preset]
    issuer = config.issuer or ""
    if config.discovery_url:
        discovery = config.discovery_url
    elif config.preset == "auth0":
        discovery = (issuer if issuer.endswith("/") else issuer + "/") + ".well-known/openid-configuration"
    elif config.issuer and config.preset == "entra":
        discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
    else:
        discovery = preset.discovery.format(issuer=issuer.rstrip("/"), tenant=config.tenant or "")
    claims = config.claims
    return ResolvedProvider(
        config=config,
        discovery_url=discovery,
        subject_claim=claims.subject or preset.subject,
        email_claim=claims.email or preset.email,
        name_claim=claims.name or preset.name,
        groups_claim=claims.groups if claims.groups is not None else preset.groups,
        roles_claim=claims.roles if claims.roles is not None else preset.roles,
        send_resource=config.send_resource if config.send_resource is not None else preset.send_resource,
        entra_issuers=preset.entra_issuers,
        label=config.label or preset.label,
        offline=preset.offline,
    )
