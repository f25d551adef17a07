"""From a verified ID token to a Bastion user.

- The subject is (issuer, the preset's subject claim): Entra's ``oid``, else ``sub``. The user
  id is derived from it (``x_`` + a hash), so the same person always maps to the same user and
  two IdPs can never collide; the username shown to admins is ``<idp>:<email or subject>``.
- Groups and roles come from the configured claims (dotted paths reach nested claims such as
  Keycloak's ``realm_access.roles``). An Entra *groups overage* (``_claim_names.groups``: the user
  is in too many groups to list) is refused with a message that says how to fix it, instead of
  silently treating the user as a member of nothing.
- ``grants`` map IdP roles/groups to Bastion groups and to the scopes the user may receive.
- ``claims.attributes`` maps claims to user attributes for policy rules (a string, a list of
  strings, an integer or a boolean, as the claim gives it; other values are left out, strings
  and lists are bounded): each sign-in replaces the attributes it maps, a missing claim removes
  one, and the user's other attributes stay.
- The user record is created on first sign-in and updated at every sign-in (display name,
  e-mail, groups, IdP attributes); an admin can still disable it locally.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.config.idp import PROVISIONED_ATTRIBUTES
from bastion.core.attributes import MAX_STRING_CHARS, coerce
from bastion.core.errors import Conflict
from bastion.core.records import UserRecord
from bastion.idp.oidc import IdpError
from bastion.idp.presets import ResolvedProvider
from bastion.store.base import UserStore

MAX_CLAIM_VALUES = 500


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    provider: str
    issuer: str
    subject: str
    email: str | None
    name: str
    idp_groups: frozenset[str]
    idp_roles: frozenset[str]
    tenant: str | None
    entra: bool = False
    attributes: Mapping[str, object] = field(default_factory=dict)  # claims.attributes, as read

    @property
    def user_id(self) -> str:
        # Entra sends v1 (sts.windows.net/<tid>/) or v2 issuers for one tenant; its object id is
        # unique per tenant, so the tenant, not the issuer's spelling, names the namespace
        namespace = f"urn:entra:tenant:{self.tenant}" if self.entra and self.tenant else self.issuer
        digest = hashlib.sha256(f"{namespace}\x00{self.subject}".encode()).hexdigest()
        return "x_" + digest[:24]

    @property
    def username(self) -> str:
        return f"{self.provider}:{(self.email or self.subject).lower()}"[:128]


def claim(claims: dict[str, Any], path: str) -> Any:
    """The claim named ``path``, or the nested one it spells with dots (namespaced claims such
    as Auth0's ``https://acme.example/roles`` are taken whole first)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _strings(value: Any, what: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= MAX_CLAIM_VALUES:
        return frozenset(value)
    raise IdpError(
        "The identity provider sent user details Bastion cannot read", detail=f"{what} claim malformed"
    )


def _attribute(value: Any) -> object | None:
    """A claim's value as a user attribute: a bounded string, list of strings, integer or
    boolean; None (left out) for anything else."""
    if isinstance(value, bool) or (isinstance(value, int) and coerce(value, "long") is not None):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING_CHARS else None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        members = coerce(value, "set")
        return list(members) if isinstance(members, tuple) else None  # sorted, unique, bounded
    return None


def _attributes(provider: ResolvedProvider, claims: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, path in provider.config.claims.attributes.items():
        value = _attribute(claim(claims, path))
        if value is not None:
            out[name] = value
    return out


def identity_from_claims(provider: ResolvedProvider, claims: dict[str, Any]) -> ExternalIdentity:
    names = claims.get("_claim_names")
    if provider.groups_claim and isinstance(names, dict) and provider.groups_claim in names:
        raise IdpError(
            f"{provider.label} did not send your groups: you are in more groups than fit in a token "
            "(groups overage). Ask your administrator to send only the groups assigned to the "
            "application, or to use app roles instead of groups.",
            detail="groups overage (_claim_names.groups)",
        )
    subject = claim(claims, provider.subject_claim)
    if not isinstance(subject, str) or not subject:
        raise IdpError(
            "The identity provider did not say who you are", detail=f"no {provider.subject_claim} claim"
        )
    email = claim(claims, provider.email_claim)
    if not isinstance(email, str) or "@" not in email:
        email = claims.get("preferred_username") if "@" in str(claims.get("preferred_username", "")) else None
    name = claim(claims, provider.name_claim)
    tid = claims.get("tid")
    return ExternalIdentity(
        provider=provider.name,
        issuer=str(claims["iss"]),
        subject=subject,
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) and name.strip() else (email or subject),
        idp_groups=_strings(claim(claims, provider.groups_claim), "groups")
        if provider.groups_claim
        else frozenset(),
        idp_roles=_strings(claim(claims, provider.roles_claim), "roles")
        if provider.roles_claim
        else frozenset(),
        tenant=tid if isinstance(tid, str) else None,
        entra=provider.entra_issuers,
        attributes=_attributes(provider, claims),
    )


def mapped_groups(provider: ResolvedProvider, identity: ExternalIdentity) -> frozenset[str]:
    groups: set[str] = set()
    for grant in provider.config.grants:
        if grant.role in identity.idp_roles or grant.group in identity.idp_groups:
            groups.update(grant.groups)
    return frozenset(groups)


def allowed_scopes(provider: ResolvedProvider, identity: ExternalIdentity) -> frozenset[str] | None:
    """The scopes this user may be granted, or None when no grant restricts scopes."""
    rules = [g for g in provider.config.grants if g.scopes]
    if not rules:
        return None
    allowed: set[str] = set()
    for grant in rules:
        if grant.role in identity.idp_roles or grant.group in identity.idp_groups:
            allowed.update(grant.scopes)
    return frozenset(allowed)


def _merged(
    existing: UserRecord | None, provider: ResolvedProvider, identity: ExternalIdentity, own: dict[str, Any]
) -> dict[str, Any]:
    """The user's attributes after this sign-in: the ones provisioning sets (``own``) and the
    mapped ones (``claims.attributes``) replaced, the others (set by an administrator) kept."""
    mapped = set(provider.config.claims.attributes)
    kept = {
        k: v
        for k, v in (existing.attributes if existing is not None else {}).items()
        if k not in mapped and k not in PROVISIONED_ATTRIBUTES
    }
    return {**kept, **identity.attributes, **own}


async def provision(users: UserStore, provider: ResolvedProvider, identity: ExternalIdentity) -> UserRecord:
    """Create or update the user; a locally disabled user stays disabled (returned as such)."""
    own: dict[str, Any] = {
        "idp": identity.provider,
        "idp_issuer": identity.issuer,
        "idp_subject": identity.subject,
        "idp_roles": sorted(identity.idp_roles),
        "idp_groups": sorted(identity.idp_groups)[:MAX_CLAIM_VALUES],
        "allowed_scopes": sorted(s) if (s := allowed_scopes(provider, identity)) is not None else None,
    }
    if identity.tenant:
        own["tenant"] = identity.tenant
    groups = mapped_groups(provider, identity)
    existing = await users.get(identity.user_id)
    attributes = _merged(existing, provider, identity, own)
    if existing is None:
        record = UserRecord(
            user_id=identity.user_id,
            username=identity.username,
            password_hash=None,
            display_name=identity.name[:200],
            email=identity.email,
            groups=groups,
            attributes=attributes,
            source=identity.provider,
            created_at=time.time(),
        )
        try:
            await users.add(record)
        except Conflict:  # a concurrent first sign-in, or the username is taken
            existing = await users.get(identity.user_id)
            if existing is None:
                raise IdpError(
                    "Your account could not be created", detail=f"username {identity.username!r} taken"
                ) from None
        else:
            return record
    await users.update_profile(
        existing.user_id,
        display_name=identity.name[:200],
        email=identity.email,
        groups=groups,
        attributes=attributes,
    )
    refreshed = await users.get(existing.user_id)
    assert refreshed is not None
    return refreshed
