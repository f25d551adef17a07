"""``identity_providers:`` in bastion.yaml: enterprise IdPs users sign in with (OIDC).

Each entry is a preset (data in ``bastion.idp.presets``) plus overrides. Bastion is ONE
confidential client at each IdP, registered there once by the admin; MCP clients never see it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel, https_url
from bastion.core.attributes import MAX_ATTRIBUTES

IDP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# names claims.attributes may not map: what provisioning sets itself, and the roles role rules read
PROVISIONED_ATTRIBUTES = frozenset(
    {"idp", "idp_issuer", "idp_subject", "idp_roles", "idp_groups", "allowed_scopes", "tenant", "roles"}
)
Preset = Literal["entra", "okta", "google", "keycloak", "auth0", "oidc"]


def _default_scopes() -> list[str]:
    return ["openid", "profile", "email"]


class ClaimNames(ConfigModel):
    """Where the user's attributes are in the ID token (dotted paths reach nested claims,
    e.g. Keycloak's ``realm_access.roles``). Defaults come from the preset."""

    subject: str | None = Field(None, description="Stable user id claim (entra: oid; others: sub).")
    email: str | None = Field(None, description="E-mail claim (entra: email, else preferred_username).")
    name: str | None = Field(None, description="Display-name claim (default: name).")
    groups: str | None = Field(None, description="Group claim (default: groups).")
    roles: str | None = Field(
        None, description="Role claim (entra: roles, the app roles; keycloak: realm_access.roles)."
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "User attributes for policy rules: {<attribute>: <claim>}, e.g. {department: department, "
            "level: employee.level}; each attribute must be declared in policy.user_attributes. Read "
            "at every sign-in: the claim's value replaces the attribute (a missing claim removes it)."
        ),
    )

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"map at most {MAX_ATTRIBUTES} attributes")
        for name, path in value.items():
            if not ATTRIBUTE_NAME.match(name):
                raise ValueError(f"attribute name {name!r} must be letters, digits and '_' (at most 64)")
            if name in PROVISIONED_ATTRIBUTES:
                raise ValueError(f"attribute {name!r} is set by Bastion itself")
            if not path.strip():
                raise ValueError(f"attribute {name!r}: name the claim it comes from")
        return value


class Grant(ConfigModel):
    """One mapping rule: users with this IdP role or group get these Bastion groups and scopes."""

    role: str | None = Field(None, description="IdP role (e.g. the Entra app role Sales.Write).")
    group: str | None = Field(None, description="IdP group (name or, for Entra, object id).")
    groups: list[str] = Field(default_factory=list, description="Bastion groups granted.")
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes the user may be granted (must be in auth.scopes); without any grant "
        "naming scopes, a user may have every scope.",
    )

    @model_validator(mode="after")
    def _one_condition(self) -> Grant:
        if (self.role is None) == (self.group is None):
            raise ValueError("set exactly one of role or group")
        return self


class IdentityProvider(ConfigModel):
    name: str = Field(description="Identifier in URLs, logs and the audit trail (lowercase, digits, '-').")
    preset: Preset = Field(description="entra, okta, google, keycloak, auth0, or oidc (any provider).")
    label: str | None = Field(None, description="Shown on the sign-in page: 'Sign in with <label>'.")
    tenant: str | None = Field(
        None, description="entra: tenant id or domain, or organizations / common (multi-tenant)."
    )
    issuer: str | None = Field(
        None,
        description=(
            "The IdP's issuer URL (okta, keycloak, auth0, oidc; entra derives it from tenant). Discovery "
            "is read from <issuer>/.well-known/openid-configuration; ID tokens must carry the issuer "
            "that discovery names."
        ),
    )
    allowed_tenants: list[str] = Field(
        default_factory=list,
        description=(
            "entra with organizations/common: the tenant ids (tid) allowed to sign in. Empty: any "
            "tenant (only sensible for a single-tenant registration)."
        ),
    )
    discovery_url: str | None = Field(None, description="Override the discovery document URL.")
    client_id: str = Field(description="Bastion's client id at the IdP (the one app registration).")
    client_secret: str | None = Field(None, description="Its secret, as ${ENV_VAR} (secret methods).")
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] = (
        Field("client_secret_basic", description="How Bastion authenticates at the IdP's token endpoint.")
    )
    private_key_file: str | None = Field(
        None, description="private_key_jwt: PEM private key (Entra: the certificate's key)."
    )
    certificate_file: str | None = Field(
        None, description="private_key_jwt with Entra: the PEM certificate (its SHA-1 thumbprint is the x5t)."
    )
    scopes: list[str] = Field(
        default_factory=_default_scopes, description="Scopes requested from the IdP (openid is required)."
    )
    refresh: bool = Field(
        True,
        description=(
            "Ask for offline_access, keep the IdP's refresh token (encrypted) and re-check the user at the "
            "IdP when an MCP client refreshes; a user disabled at the IdP then loses access."
        ),
    )
    send_resource: bool | None = Field(
        None, description="Send RFC 8707 resource to the IdP (default from the preset; never for entra)."
    )
    claims: ClaimNames = Field(default_factory=ClaimNames, description="Claim names (preset defaults).")
    grants: list[Grant] = Field(
        default_factory=list, description="IdP roles/groups → Bastion groups and scopes."
    )
    email_domains: list[str] = Field(
        default_factory=list, description="Users with these e-mail domains are sent to this IdP (home realm)."
    )
    recheck_interval: float = Field(
        300.0,
        ge=0,
        description=(
            "Seconds between checks of the user at the IdP (with its refresh token) when MCP clients "
            "refresh; a user disabled at the IdP loses access within this time plus the access-token "
            "lifetime."
        ),
    )
    max_session_lifetime: float = Field(
        7 * 86400.0,
        gt=0,
        description="Seconds after the IdP sign-in until refresh stops working and the user signs in again.",
    )
    timeout: float = Field(10.0, gt=0, le=60, description="Seconds allowed for each request to the IdP.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not IDP_NAME.match(value):
            raise ValueError("must start with a lowercase letter; lowercase letters, digits and '-' only")
        return value

    @field_validator("issuer", "discovery_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return https_url(value)  # never normalized: issuers compare exactly (Auth0's ends with '/')

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [d.lower().lstrip("@") for d in value]

    @model_validator(mode="after")
    def _complete(self) -> IdentityProvider:
        if self.preset == "entra" and self.send_resource:
            raise ValueError("entra: send_resource must stay off (Entra rejects resource with AADSTS9010010)")
        if "openid" not in self.scopes:
            raise ValueError("scopes must include openid")
        if self.preset == "entra" and not (self.tenant or self.issuer or self.discovery_url):
            raise ValueError("entra needs tenant (a tenant id or domain, organizations or common)")
        if self.preset not in ("entra", "google") and not (self.issuer or self.discovery_url):
            raise ValueError(f"{self.preset} needs issuer (or discovery_url)")
        method = self.token_endpoint_auth_method
        if method == "private_key_jwt" and self.preset == "entra" and not self.certificate_file:
            raise ValueError(
                "entra with private_key_jwt needs certificate_file (Entra names keys by thumbprint)"
            )
        if method == "private_key_jwt" and not self.private_key_file:
            raise ValueError("private_key_jwt needs private_key_file")
        if method != "private_key_jwt" and not self.client_secret:
            raise ValueError(f"{method} needs client_secret (use ${{ENV_VAR}})")
        return self
