"""Identity-provider presets, claims mapping and Entra's issuer forms, without a network."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.config.idp import IdentityProvider
from bastion.idp.claims import ExternalIdentity, allowed_scopes, claim, identity_from_claims, mapped_groups
from bastion.idp.oidc import IdpError, OidcProvider
from bastion.idp.presets import resolve

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _entra(**extra: Any) -> IdentityProvider:
    return IdentityProvider.model_validate(
        {
            "name": "entra",
            "preset": "entra",
            "tenant": TENANT,
            "client_id": "app",
            "client_secret": "s",
            **extra,
        }
    )


def test_presets_fill_in_discovery_and_claims() -> None:
    entra = resolve(_entra())
    assert (
        entra.discovery_url
        == f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
    )
    assert entra.subject_claim == "oid"
    assert entra.send_resource is False
    keycloak = resolve(
        IdentityProvider.model_validate(
            {
                "name": "kc",
                "preset": "keycloak",
                "issuer": "https://kc.example/realms/acme",
                "client_id": "b",
                "client_secret": "s",
            }
        )
    )
    assert keycloak.discovery_url == "https://kc.example/realms/acme/.well-known/openid-configuration"
    assert keycloak.roles_claim == "realm_access.roles"
    auth0 = resolve(
        IdentityProvider.model_validate(
            {
                "name": "a0",
                "preset": "auth0",
                "issuer": "https://acme.eu.auth0.com/",
                "client_id": "b",
                "client_secret": "s",
                "claims": {"roles": "https://acme/roles"},
            }
        )
    )
    assert auth0.discovery_url == "https://acme.eu.auth0.com/.well-known/openid-configuration"
    assert auth0.roles_claim == "https://acme/roles"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"preset": "entra", "client_secret": "s"}, "entra needs tenant"),
        ({"preset": "okta", "client_secret": "s"}, "okta needs issuer"),
        (
            {"preset": "entra", "tenant": "t", "client_secret": "s", "send_resource": True},
            "send_resource must stay off",
        ),
        ({"preset": "entra", "tenant": "t"}, "needs client_secret"),
        (
            {"preset": "entra", "tenant": "t", "token_endpoint_auth_method": "private_key_jwt"},
            "certificate_file",
        ),
        (
            {
                "preset": "okta",
                "issuer": "https://o.example",
                "token_endpoint_auth_method": "private_key_jwt",
            },
            "private_key_file",
        ),
        ({"preset": "entra", "tenant": "t", "client_secret": "s", "scopes": ["email"]}, "include openid"),
        ({"preset": "oidc", "issuer": "http://idp.example", "client_secret": "s"}, "https URL"),
    ],
)
def test_configuration_mistakes_are_named(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IdentityProvider.model_validate({"name": "x", "client_id": "c", **settings})


def _claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "sub": "pairwise-sub",
        "oid": "00000000-0000-0000-0000-000000000001",
        "tid": TENANT,
        "email": "Alice@Contoso.com",
        "name": "Alice Example",
        "roles": ["Sales.Write"],
        "groups": ["g-1", "g-2"],
        **extra,
    }


def test_entra_claims_become_a_stable_identity_with_mapped_groups_and_scopes() -> None:
    provider = resolve(
        _entra(
            grants=[
                {"role": "Sales.Write", "groups": ["sales"], "scopes": ["crm:write"]},
                {"group": "g-2", "groups": ["staff"]},
                {"role": "Admin", "groups": ["admins"], "scopes": ["admin"]},
            ]
        )
    )
    identity = identity_from_claims(provider, _claims())
    assert identity.subject == "00000000-0000-0000-0000-000000000001"  # oid, not the pairwise sub
    assert identity.username == "entra:alice@contoso.com"
    assert identity.user_id == identity_from_claims(provider, _claims(sub="other")).user_id
    assert mapped_groups(provider, identity) == {"sales", "staff"}
    assert allowed_scopes(provider, identity) == {"crm:write"}
    no_rules = resolve(_entra())
    assert allowed_scopes(no_rules, identity) is None


def test_identities_from_two_issuers_never_collide() -> None:
    one = ExternalIdentity("a", "https://a.example", "42", None, "x", frozenset(), frozenset(), None)
    two = ExternalIdentity("b", "https://b.example", "42", None, "x", frozenset(), frozenset(), None)
    assert one.user_id != two.user_id


def test_groups_overage_is_reported_not_ignored() -> None:
    claims = _claims(_claim_names={"groups": "src1"}, _claim_sources={"src1": {"endpoint": "https://graph"}})
    del claims["groups"]
    with pytest.raises(IdpError, match="groups overage"):
        identity_from_claims(resolve(_entra()), claims)


@pytest.mark.parametrize(
    "bad",
    [{"oid": None}, {"oid": ""}, {"roles": [1, 2]}, {"groups": {"not": "a list"}}],
)
def test_unreadable_claims_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(IdpError):
        identity_from_claims(resolve(_entra()), _claims(**bad))


def test_nested_claims_and_email_fallback() -> None:
    assert claim({"realm_access": {"roles": ["a"]}}, "realm_access.roles") == ["a"]
    assert claim({"https://acme.example/roles": ["r"]}, "https://acme.example/roles") == ["r"]  # Auth0
    assert claim({"realm_access": "x"}, "realm_access.roles") is None
    identity = identity_from_claims(
        resolve(_entra()), _claims(email=None, preferred_username="bob@contoso.com")
    )
    assert identity.email == "bob@contoso.com"


@pytest.mark.parametrize(
    ("discovery_issuer", "token_iss", "tid", "accepted"),
    [
        (
            f"https://login.microsoftonline.com/{TENANT}/v2.0",
            f"https://login.microsoftonline.com/{TENANT}/v2.0",
            TENANT,
            True,
        ),
        (
            f"https://login.microsoftonline.com/{TENANT}/v2.0",
            f"https://sts.windows.net/{TENANT}/",
            TENANT,
            True,
        ),
        (
            f"https://login.microsoftonline.com/{TENANT}/v2.0",
            "https://sts.windows.net/other-tenant/",
            "other-tenant",
            False,
        ),
        (
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            f"https://login.microsoftonline.com/{TENANT}/v2.0",
            TENANT,
            True,
        ),
        (
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            f"https://login.microsoftonline.com/{TENANT}/v2.0",
            "other",
            False,
        ),
        (f"https://login.microsoftonline.com/{TENANT}/v2.0", "https://evil.example/v2.0", TENANT, False),
    ],
)
def test_entra_issuer_forms(discovery_issuer: str, token_iss: str, tid: str, accepted: bool) -> None:
    provider = OidcProvider(resolve(_entra()), redirect_uri="https://gw.example/login/idp/entra/callback")
    provider._metadata = {"issuer": discovery_issuer}
    assert provider._issuer_matches(token_iss, tid=tid, strict_template=True) is accepted


def test_other_presets_compare_the_issuer_exactly() -> None:
    okta = IdentityProvider.model_validate(
        {
            "name": "okta",
            "preset": "okta",
            "issuer": "https://acme.okta.com/oauth2/default",
            "client_id": "c",
            "client_secret": "s",
        }
    )
    provider = OidcProvider(resolve(okta), redirect_uri="https://gw.example/cb")
    provider._metadata = {"issuer": "https://acme.okta.com/oauth2/default"}
    assert provider._issuer_matches("https://acme.okta.com/oauth2/default", tid=None, strict_template=True)
    assert not provider._issuer_matches(
        "https://acme.okta.com/oauth2/default/", tid=None, strict_template=True
    )
