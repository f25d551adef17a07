"""Two identity providers at once (issue #4): "contoso" (tenant A, client_secret_basic) and
"fabrikam" (tenant B, private_key_jwt like Entra certificate credentials, and an IdP that does
not offer RFC 9207 ``iss``), each a real Entra-like IdP on its own port.

The login page's "Work e-mail" form sends each user to the IdP of their e-mail domain, with the
address as ``login_hint`` at the IdP; an unknown domain is an error on the login page; a client's
``login_hint`` and an upstream bound to an IdP go straight there. Both sign-ins complete, so
private_key_jwt towards the IdP works.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import jwt
import pytest

from tests.support.federation import (
    ALICE,
    callback_url,
    federated_user,
    idp_callback,
    idp_provider,
    register_public_client,
    through_bastion_to_idp,
)
from tests.support.federation_checks import message_page
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import (
    IdpServer,
    private_key_jwt_client,
    query_params,
    require_idp_packages,
    run_idp,
    secret_client,
)
from tests.support.oauth import (
    authorize_url,
    browser,
    exchange_code,
    hidden_fields,
    list_tools,
    pkce,
    query_of,
)
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

pytestmark = pytest.mark.node

REDIRECT = "http://127.0.0.1:53682/callback"
DAVE = {
    "sub": "dave-pairwise",
    "oid": "00000000-0000-0000-0000-0000000000d4",
    "email": "dave@fabrikam.com",
    "name": "Dave Fabrikam",
    "roles": [],
    "groups": [],
    "tid": "tenant-b",
}
NO_REALM = "No sign-in is set up for that e-mail domain. Check the address or ask your administrator."


@dataclass
class Realms:
    gateway: Gateway
    idps: dict[str, IdpServer]  # provider name → its IdP
    client_ids: dict[str, str]  # provider name → Bastion's client id there


@pytest.fixture(scope="module")
def realms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realms]:
    require_idp_packages()
    tmp: Path = tmp_path_factory.mktemp("federation-realms")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    contoso_client = secret_client("bastion-contoso", [callback_url(base, "contoso")])
    fabrikam_client = private_key_jwt_client("bastion-fabrikam", [callback_url(base, "fabrikam")])
    with (
        recording_upstream() as upstream,
        run_idp(
            tmp, issuer_path="/tenant-a/v2.0", clients=[contoso_client], users={"alice": ALICE}
        ) as contoso,
        run_idp(
            tmp,
            issuer_path="/tenant-b/v2.0",
            clients=[fabrikam_client],
            users={"dave": DAVE},
            extra={"authorization_response_iss": False},
        ) as fabrikam,
    ):
        providers = [
            idp_provider("contoso", contoso, contoso_client, label="Contoso", email_domains=["contoso.com"]),
            idp_provider(
                "fabrikam",
                fabrikam,
                fabrikam_client,
                key_dir=tmp,
                label="Fabrikam",
                email_domains=["@Fabrikam.com"],
            ),
        ]
        assert providers[1]["token_endpoint_auth_method"] == "private_key_jwt"
        upstreams = [
            {"name": "a", "http": {"url": upstream.url}},
            {"name": "b", "http": {"url": upstream.url}, "identity_provider": "fabrikam"},
        ]
        config = {
            "auth": {"enabled": True, "registration": {"max_per_hour_per_address": 1000}},
            "identity_providers": providers,
        }
        with run_gateway(tmp, upstreams, extra=config, port=port) as gateway:
            yield Realms(
                gateway,
                {"contoso": contoso, "fabrikam": fabrikam},
                {"contoso": contoso_client["client_id"], "fabrikam": fabrikam_client["client_id"]},
            )


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def _pending(http: httpx2.AsyncClient, realms: Realms, **extra: str) -> tuple[str, str, Any]:
    """A new client's authorization request: (client_id, the first redirect's Location, PKCE)."""
    gateway = realms.gateway
    client_id = await register_public_client(http, gateway.base, REDIRECT)
    proof = pkce()
    resource = extra.pop("resource", gateway.url("a"))
    url = authorize_url(
        gateway.base, client_id=client_id, resource=resource, challenge=proof.challenge, **extra
    )
    first = await http.get(url)
    assert first.status_code == 303, first.text[:300]
    return client_id, first.headers["location"], proof


def _login_error(response: httpx2.Response) -> str:
    found = re.search(r'id="login-error">(.*?)</div>', response.text, re.S)
    return unescape(found.group(1)).strip() if found else ""


@pytest.mark.parametrize(
    ("email", "provider", "login"),
    [("alice@contoso.com", "contoso", "alice"), ("Dave@FABRIKAM.com", "fabrikam", "dave")],
)
async def test_the_work_email_picks_the_idp(
    realms: Realms, http: httpx2.AsyncClient, email: str, provider: str, login: str
) -> None:
    gateway = realms.gateway
    client_id, location, proof = await _pending(http, realms)
    assert location.startswith("/login?request="), location
    handle = query_of(location)["request"]
    page = await http.get(f"{gateway.base}{location}")
    assert page.status_code == 200
    assert 'action="/login/realm"' in page.text
    assert "Work e-mail" in page.text

    chosen = await http.post(
        f"{gateway.base}/login/realm", data={**hidden_fields(page.text), "email": f"  {email} "}
    )
    assert chosen.status_code == 303, chosen.text[:300]
    assert chosen.headers["location"] == (
        f"/login/idp/{provider}?request={quote(handle, safe='')}&login_hint={quote(email, safe='')}"
    )
    # consent for the (dynamically registered) client, then the IdP of that domain
    to_idp = await through_bastion_to_idp(http, gateway.base + chosen.headers["location"], provider=provider)
    idp = realms.idps[provider]
    at_idp = to_idp.headers["location"]
    assert at_idp.startswith(idp.authorization_endpoint + "?"), at_idp
    sent = query_of(at_idp)
    assert sent["login_hint"] == email
    assert sent["client_id"] == realms.client_ids[provider]
    assert sent["redirect_uri"] == callback_url(gateway.base, provider)
    assert "resource" not in sent

    callback = await idp_callback(http, at_idp, callback=callback_url(gateway.base, provider), login=login)
    # contoso's IdP sends RFC 9207 iss; fabrikam's neither offers nor sends it, and that is fine
    assert ("iss" in query_params(callback)) == (provider == "contoso")
    final = await http.get(callback)
    assert final.status_code in (302, 303), final.text[:500]
    answer = query_of(final.headers["location"])
    assert answer["state"] == "st-1"
    # the code is redeemable: Bastion redeemed the IdP's code (private_key_jwt at fabrikam)
    tokens = await exchange_code(
        http,
        gateway.base,
        code=answer["code"],
        verifier=proof.verifier,
        client_id=client_id,
        resource=gateway.url("a"),
    )
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    assert (await list_tools(http, gateway.url("a"), access)).status_code == 200
    user = await federated_user(gateway, f"{provider}:{email.lower()}")
    assert user is not None
    assert user.source == provider
    assert user.attributes["idp_issuer"] == idp.issuer
    assert jwt.decode(access, options={"verify_signature": False})["sub"] == user.user_id


async def test_an_unknown_domain_is_an_error_on_the_login_page(
    realms: Realms, http: httpx2.AsyncClient
) -> None:
    gateway = realms.gateway
    _, location, _ = await _pending(http, realms)
    page = await http.get(f"{gateway.base}{location}")
    fields = hidden_fields(page.text)
    for email in ("eve@unknown.example", "eve@contoso.com.evil.example", "not-an-address", ""):
        refused = await http.post(f"{gateway.base}/login/realm", data={**fields, "email": email})
        assert refused.status_code == 400, (email, refused.text[:300])
        assert "location" not in refused.headers
        assert _login_error(refused) == NO_REALM, email
        assert 'action="/login/realm"' in refused.text  # the form is there to try again
        assert hidden_fields(refused.text)["request"] == fields["request"]
    forged = await http.post(
        f"{gateway.base}/login/realm", data={"request": fields["request"], "email": "a@contoso.com"}
    )
    assert forged.status_code == 403
    assert "location" not in forged.headers
    assert message_page(forged) == ("Request refused", "The form expired. Try again.")


@pytest.mark.parametrize(
    ("hint", "target"),
    [
        ("Dave@Fabrikam.com", "/login/idp/fabrikam"),
        ("alice@contoso.com", "/login/idp/contoso"),
        ("someone@unknown.example", "/login"),  # no realm: the choice
    ],
)
async def test_a_login_hint_from_the_client_picks_the_idp(
    realms: Realms, http: httpx2.AsyncClient, hint: str, target: str
) -> None:
    _, location, _ = await _pending(http, realms, login_hint=hint)
    assert location.split("?", 1)[0] == target, location
    if target != "/login":
        assert query_of(location)["login_hint"] == hint
        to_idp = await through_bastion_to_idp(
            http, realms.gateway.base + location, provider=target.rsplit("/", 1)[1]
        )
        assert query_of(to_idp.headers["location"])["login_hint"] == hint


async def test_an_upstream_bound_to_an_idp_goes_straight_there(
    realms: Realms, http: httpx2.AsyncClient
) -> None:
    gateway = realms.gateway
    _, location, _ = await _pending(http, realms, resource=gateway.url("b"))
    assert location.startswith("/login/idp/fabrikam?request="), location
    assert "login_hint" not in query_of(location)
    to_idp = await through_bastion_to_idp(http, gateway.base + location, provider="fabrikam")
    assert to_idp.headers["location"].startswith(realms.idps["fabrikam"].authorization_endpoint + "?")
    # the unbound upstream still offers the choice, with both providers
    _, location, _ = await _pending(http, realms)
    page = await http.get(f"{gateway.base}{location}")
    assert "Sign in with Contoso" in page.text
    assert "Sign in with Fabrikam" in page.text
