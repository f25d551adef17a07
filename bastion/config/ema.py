"""``ema:`` in bastion.yaml: Enterprise-Managed Authorization (the MCP extension
``io.modelcontextprotocol/enterprise-managed-authorization``): which enterprise IdPs may hand
MCP clients ID-JAGs that Bastion redeems for its own access tokens."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel

ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _default_algorithms() -> list[str]:
    return ["RS256", "ES256"]


class TrustedIssuer(ConfigModel):
    issuer: str = Field(description="The IdP's issuer identifier, compared exactly with the ID-JAG's iss.")
    jwks_uri: str | None = Field(None, description="Where the IdP publishes its signing keys (this or jwks).")
    jwks: dict[str, Any] | None = Field(None, description="The IdP's public keys inline, as a JWK Set.")
    algorithms: list[str] = Field(
        default_factory=_default_algorithms,
        description="Signature algorithms accepted from this IdP (asymmetric only; never none or HS*).",
    )
    clients: list[str] = Field(
        default_factory=list,
        description=(
            "Bastion client ids that may present this IdP's ID-JAGs (empty: any authenticated client)."
        ),
    )
    subject: Literal["sub", "email"] = Field(
        "sub",
        description=(
            "How the ID-JAG's user becomes a Bastion user: sub (the user this IdP's (iss, sub) names, "
            "created on first use when provision is on) or email (an existing user with that e-mail)."
        ),
    )
    provision: bool = Field(True, description="subject: sub — create the user on first use (just in time).")
    name: str | None = Field(
        None, description="Short name for users and the audit trail (default: the host)."
    )

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("must be an https URL (http only on loopback, for development)")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        bad = sorted(set(value) - ASYMMETRIC_ALGS)
        if bad or not value:
            raise ValueError(f"only asymmetric algorithms are accepted, not {bad or 'an empty list'}")
        return value

    @model_validator(mode="after")
    def _keys(self) -> TrustedIssuer:
        if (self.jwks_uri is None) == (self.jwks is None):
            raise ValueError("set exactly one of jwks_uri or jwks")
        return self

    @property
    def label(self) -> str:
        return self.name or (urlsplit(self.issuer).hostname or self.issuer)


class Ema(ConfigModel):
    trusted_issuers: list[TrustedIssuer] = Field(
        default_factory=list,
        description="Enterprise IdPs whose ID-JAGs Bastion redeems (RFC 7523 jwt-bearer at /token).",
    )
    max_assertion_age: int = Field(
        600, ge=30, le=3600, description="Seconds an ID-JAG may have lived (iat) before it is refused."
    )

    @field_validator("trusted_issuers")
    @classmethod
    def _unique(cls, value: list[TrustedIssuer]) -> list[TrustedIssuer]:
        issuers = [t.issuer for t in value]
        if len(set(issuers)) != len(issuers):
            raise ValueError("an issuer is listed twice")
        return value
