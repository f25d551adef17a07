"""``auth:`` in bastion.yaml: Bastion as the MCP clients' authorization server."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from bastion.config.base import ConfigModel

_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 §3.3 scope-token


def _default_scopes() -> list[str]:
    return ["mcp"]


def _scope_list(value: list[str]) -> list[str]:
    for scope in value:
        if not _SCOPE.match(scope):
            raise ValueError(f"{scope!r} is not a valid scope (printable ASCII, no spaces or quotes)")
    if len(set(value)) != len(value):
        raise ValueError("scopes must not repeat")
    return value


class Registration(ConfigModel):
    enabled: bool = Field(
        True,
        description=(
            "Offer RFC 7591 dynamic client registration at /register (deprecated by MCP 2026-07-28 in "
            "favour of client metadata documents, still used by many clients)."
        ),
    )
    max_per_hour_per_address: int = Field(
        20, ge=1, description="Registrations one client IP address may make per hour."
    )
    infer_application_type: bool = Field(
        False,
        description=(
            "Accept registrations without application_type (MCP 2026-07-28 requires it; older clients "
            "such as apps on the TypeScript SDK 1.x omit it): native when every redirect URI is "
            "loopback, web otherwise."
        ),
    )
    unused_ttl: float = Field(
        86400.0,
        gt=0,
        description="Seconds a registered client that never obtained a token is kept before it is deleted.",
    )


class ClientMetadataDocuments(ConfigModel):
    enabled: bool = Field(
        True, description="Accept https URLs as client_id (OAuth Client ID Metadata Documents)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Development only: hosts whose documents may be fetched although they resolve to private, "
            "loopback or link-local addresses (and over http when https_only is false)."
        ),
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Development only: special-use networks (CIDR) documents may be fetched from.",
    )
    https_only: bool = Field(True, description="Refuse http client_id URLs (false only for allowed_hosts).")
    ca_file: str | None = Field(
        None, description="PEM bundle of extra certificate authorities trusted for the fetch (internal CAs)."
    )


class Login(ConfigModel):
    password: bool = Field(
        True,
        description=(
            "Offer the built-in user directory's password sign-in (false: identity providers only)."
        ),
    )
    max_failures_per_user: int = Field(
        5, ge=1, description="Failed sign-ins per username within failure_window before sign-in is refused."
    )
    max_failures_per_address: int = Field(
        30, ge=1, description="Failed sign-ins per client IP address within failure_window."
    )
    failure_window: float = Field(900.0, gt=0, description="Seconds over which failures are counted.")
    session_ttl: float = Field(
        43200.0, gt=0, description="Seconds a browser stays signed in to Bastion (login pages only)."
    )


class Auth(ConfigModel):
    enabled: bool = Field(
        True,
        description=(
            "Require Bastion-issued OAuth access tokens on every MCP endpoint. false is allowed only "
            "when listen is a loopback address (development) and logs a loud warning."
        ),
    )
    scopes: list[str] = Field(
        default_factory=_default_scopes,
        description=(
            "Scopes Bastion issues (PRM and AS metadata scopes_supported); offline_access is implied."
        ),
    )
    required_scopes: list[str] = Field(
        default_factory=list,
        description=(
            "Scopes every MCP request needs (each upstream may add its own). A token without them "
            "gets 403 insufficient_scope naming all of them in one challenge."
        ),
    )
    access_token_ttl: int = Field(900, ge=60, le=86400, description="Access-token lifetime in seconds.")
    refresh_token_ttl: int = Field(
        30 * 86400,
        ge=3600,
        description="Refresh-token lifetime in seconds (rotation keeps the family's end).",
    )
    refresh_grace: float = Field(
        10.0,
        ge=0,
        le=120,
        description=(
            "Seconds during which presenting the same refresh token again returns the same successor "
            "(a client retrying after a network error) instead of revoking the family."
        ),
    )
    code_ttl: int = Field(60, ge=10, le=600, description="Authorization-code lifetime in seconds.")
    request_ttl: int = Field(
        600, ge=60, le=3600, description="Seconds a user has to sign in and consent after /authorize."
    )
    signing_alg: Literal["ES256", "EdDSA", "RS256"] = Field(
        "ES256", description="Algorithm of newly generated signing keys."
    )
    master_key: str | None = Field(
        None,
        description=(
            "32-byte key (base64 or hex) that encrypts signing keys at rest; use ${BASTION_MASTER_KEY}. "
            "Default: read master_key_file."
        ),
    )
    master_key_file: str = Field(
        ".bastion/master.key",
        description=(
            "File holding the master key. Created (mode 0600) on first start with the embedded SQLite "
            "store; with Postgres every replica must be given the same key."
        ),
    )
    registration: Registration = Field(
        default_factory=Registration, description="Dynamic client registration."
    )
    client_metadata_documents: ClientMetadataDocuments = Field(
        default_factory=ClientMetadataDocuments, description="Client ID Metadata Documents (CIMD)."
    )
    login: Login = Field(default_factory=Login, description="Sign-in pages and brute-force limits.")

    @field_validator("scopes", "required_scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        return _scope_list(value)
