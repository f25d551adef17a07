"""``ema:`` in bastion.yaml: Enterprise-Managed Authorization (the MCP extension
``io.modelcontextprotocol/enterprise-managed-authorization``): which enterprise IdPs may hand
MCP clients ID-JAGs that Bastion redeems for its own access tokens, and (``bridge``) for which
authorization servers Bastion mints ID-JAGs itself."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel, https_url

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
        return https_url(value)

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


def _https_or_loopback(value: str) -> str:
    checked = https_url(value, fragment=False)
    assert checked is not None
    return checked


class BridgeTarget(ConfigModel):
    """One authorization server Bastion mints ID-JAGs for, and who may get them."""

    audience: str = Field(
        description="The target authorization server's issuer identifier (the ID-JAG's aud)."
    )
    resources: list[str] = Field(
        min_length=1,
        description=(
            "The target's MCP resource identifiers (RFC 9728) an ID-JAG may name; any other "
            "(audience, resource) pair is refused with invalid_target."
        ),
    )
    scopes: list[str] = Field(
        default_factory=list, description="The most an ID-JAG for this target may carry (empty: no scope)."
    )
    clients: list[str] = Field(
        default_factory=list,
        description=(
            "Bastion client ids that may exchange tokens for this target (empty: no MCP client; only "
            "Bastion itself, for upstreams with auth type ema and id_jag_issuer bastion)."
        ),
    )
    client_ids: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Bastion client id -> that client's id at the target (the ID-JAG's client_id). Default: the "
            "same id, which is right for CIMD URL client ids."
        ),
    )
    groups: list[str] = Field(
        default_factory=list, description="Users in any of these groups may get ID-JAGs for this target."
    )
    users: list[str] = Field(
        default_factory=list,
        description="Users (username or user id) who may get ID-JAGs (groups and users empty: any user).",
    )
    subject: Literal["user_id", "pairwise", "email"] = Field(
        "user_id",
        description=(
            "The ID-JAG's sub: user_id (Bastion's user id), pairwise (an HMAC of the audience and the "
            "user id, stable per target, unlinkable across targets) or email (the user's e-mail address)."
        ),
    )
    include_email: bool = Field(
        False,
        description="Add the user's email claim (EMA: SHOULD NOT unless the target needs it to find users).",
    )

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: str) -> str:
        return _https_or_loopback(value)

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a resource is listed twice")
        return [_https_or_loopback(v) for v in value]

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if any(not s or any(c in ' "\\' or not 0x21 <= ord(c) <= 0x7E for c in s) for s in value):
            raise ValueError(
                "scopes must be scope tokens (printable ASCII, no spaces, quotes or backslashes)"
            )
        return value


class Bridge(ConfigModel):
    """Bastion as an ID-JAG issuer (RFC 8693 token exchange at /token), for organisations whose
    IdP cannot mint ID-JAGs."""

    enabled: bool = Field(False, description="Mint ID-JAGs for the targets below.")
    lifetime: int = Field(300, ge=30, le=900, description="Seconds an ID-JAG lives (exp - iat).")
    targets: list[BridgeTarget] = Field(
        default_factory=list, description="Authorization servers Bastion mints ID-JAGs for (by audience)."
    )
    idp_client_ids: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Bastion client id -> its client id at Bastion's identity providers: such a client may present "
            "an ID token from one of them (subject_token_type id_token) whose aud is that id."
        ),
    )

    @model_validator(mode="after")
    def _targets(self) -> Bridge:
        if self.enabled and not self.targets:
            raise ValueError("an enabled bridge needs at least one target")
        audiences = [t.audience for t in self.targets]
        if len(set(audiences)) != len(audiences):
            raise ValueError("a target audience is listed twice")
        return self


class Ema(ConfigModel):
    trusted_issuers: list[TrustedIssuer] = Field(
        default_factory=list,
        description="Enterprise IdPs whose ID-JAGs Bastion redeems (RFC 7523 jwt-bearer at /token).",
    )
    bridge: Bridge = Field(default_factory=Bridge, description="Bastion as an ID-JAG issuer (bridge).")
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
