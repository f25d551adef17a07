"""Bad input around the sign-in through the enterprise IdP (issue #4, "How it is tested"): a
callback whose ``state`` is reused, unknown, missing or from another browser, a consent skipped by a
forged POST, the user cancelling at the IdP, a groups overage; and what the IdP is sent (Bastion's
own PKCE, state and nonce, never ``resource``).

Every refusal is checked for what the user sees (status, heading, message) and for what did NOT
happen: no code stored for the MCP client, no redirect carrying one, no Bastion user created, the
browser not signed in, and a ``login.failed`` audit record naming the IdP.

One Bastion and one Entra-like IdP for the module (``tests/support/federation_bad_input.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlencode

import httpx2
import pytest

from tests.support.federation import (
    federated_user,
    idp_callback,
    register_public_client,
    sign_in_via_idp,
    through_bastion_to_idp,
)
from tests.support.federation_bad_input import (
    REDIRECT,
    TRUSTED,
    Setup,
    assert_refused,
    bad_input_setup,
    dcr_authorize,
    new_user,
    redirected_code,
    to_callback,
)
from tests.support.federation_checks import assert_not_signed_in, wait_for_audit
from tests.support.idp import query_params
from tests.support.oauth import (
    authorize_url,
    browser,
    exchange_code,
    hidden_fields,
    pkce,
    query_of,
    stored_grants,
)

pytestmark = pytest.mark.node

EXPIRED = (
    "Sign-in request expired",
    "This sign-in is no longer valid (it expired, was already used, or was started in another "
    "browser). Go back to your application and connect again.",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with bad_input_setup(tmp_path_factory.mktemp("federation-bad-state")) as setup:
        yield setup


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


# ------------------------------------------------------------------------------- the state


async def test_a_replayed_callback_is_expired(setup: Setup, http: httpx2.AsyncClient) -> None:
    callback = await to_callback(http, setup)
    redirected_code(await http.get(callback))
    codes = stored_grants(setup.fed.gateway, "code")
    replay = await http.get(callback)
    assert_refused(replay, 400, EXPIRED)
    assert stored_grants(setup.fed.gateway, "code") == codes


async def test_an_unknown_or_missing_state_is_expired_and_burns_nothing(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    callback = await to_callback(http, setup)
    params = query_params(callback)
    assert {"code", "state", "iss"} <= params.keys(), params
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    unknown = {**params, "state": secrets.token_urlsafe(32)}
    missing = {k: v for k, v in params.items() if k != "state"}
    empty = {**params, "state": ""}
    too_long = {**params, "state": "x" * 5000}
    for forged in (unknown, missing, empty, too_long):
        answer = await http.get(f"{setup.fed.callback}?{urlencode(forged)}")
        assert_refused(answer, 400, EXPIRED)
    assert stored_grants(gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)
    # none of that consumed the real state: the genuine callback still works
    redirected_code(await http.get(callback))


async def test_a_state_from_another_browser_is_expired(setup: Setup, http: httpx2.AsyncClient) -> None:
    callback = await to_callback(http, setup)
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    async with browser() as other:
        assert (await other.get(f"{setup.base}/login")).status_code == 200  # a Bastion session of its own
        stolen = await other.get(callback)
        assert_refused(stolen, 400, EXPIRED)
        await assert_not_signed_in(other, setup.base)
    assert stored_grants(gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)


# ------------------------------------------------------------------------------- consent


async def test_a_forged_consent_post_is_refused_and_counts_for_nothing(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    _, url = await dcr_authorize(http, setup)
    first = await http.get(url)
    assert first.status_code == 303, first.text[:300]
    handle = query_of(first.headers["location"])["request"]
    start = f"{setup.base}/login/idp/entra?request={handle}"
    consent = await http.get(start)
    assert consent.status_code == 200, consent.text[:300]
    assert 'name="decision"' in consent.text
    assert 'action="/login/idp/entra/consent"' in consent.text
    login_form_csrf = hidden_fields((await http.get(f"{setup.base}/login?request={handle}")).text)["csrf"]
    async with browser() as other:  # another browser's valid consent token
        _, other_url = await dcr_authorize(other, setup)
        other_handle = query_of((await other.get(other_url)).headers["location"])["request"]
        other_consent = await other.get(f"{setup.base}/login/idp/entra?request={other_handle}")
        other_csrf = hidden_fields(other_consent.text)["csrf"]
    refused = ("Request refused", "The form expired or did not come from this page. Start again.")
    for csrf in (None, "", "forged", login_form_csrf, other_csrf):
        form = {"request": handle, "decision": "allow"} | ({"csrf": csrf} if csrf is not None else {})
        forged = await http.post(f"{setup.base}/login/idp/entra/consent", data=form)
        assert_refused(forged, 403, refused)
    # nothing was allowed: the same request still asks first, and does not go to the IdP
    again = await http.get(start)
    assert again.status_code == 200, again.headers.get("location")
    assert 'name="decision"' in again.text


async def test_consent_is_asked_of_dcr_clients_and_a_trusted_flow_does_not_bypass_it(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    gateway = setup.fed.gateway
    dcr_id, dcr_url = await dcr_authorize(http, setup, state="dcr-state")
    first = await http.get(dcr_url)
    dcr_handle = query_of(first.headers["location"])["request"]
    consent = await http.get(f"{setup.base}/login/idp/entra?request={dcr_handle}")
    assert consent.status_code == 200
    assert 'name="decision"' in consent.text

    # a pre-registered trusted client goes straight to the IdP, no consent page
    proof = pkce()
    trusted_url = authorize_url(
        setup.base,
        client_id=TRUSTED,
        resource=gateway.url("a"),
        challenge=proof.challenge,
        state="trusted-state",
    )
    first = await http.get(trusted_url)
    trusted_handle = query_of(first.headers["location"])["request"]
    to_idp = await http.get(f"{setup.base}/login/idp/entra?request={trusted_handle}")
    assert to_idp.status_code == 303, to_idp.text[:300]
    assert to_idp.headers["location"].startswith(setup.fed.idp.authorization_endpoint)
    callback = await idp_callback(http, to_idp.headers["location"], callback=setup.fed.callback)
    codes = stored_grants(gateway, "code")
    code = redirected_code(await http.get(callback), state="trusted-state")  # for the trusted client
    assert stored_grants(gateway, "code") == codes + 1
    stolen = await exchange_code(
        http,
        setup.base,
        code=code,
        verifier=proof.verifier,
        client_id=dcr_id,
        resource=gateway.url("a"),
    )
    assert stolen.status_code == 400, stolen.text
    assert stolen.json()["error"] == "invalid_grant"
    codes = stored_grants(gateway, "code")

    # the browser is signed in now, and the DCR client's request still needs the user's consent
    resumed = await http.get(f"{setup.base}/authorize/continue?request={dcr_handle}")
    assert resumed.status_code == 200, resumed.headers.get("location")
    assert 'name="decision"' in resumed.text
    assert 'action="/consent"' in resumed.text
    assert stored_grants(gateway, "code") == codes


# -------------------------------------------------------------- cancel, groups overage, resource


async def test_cancel_at_the_idp_is_access_denied_with_state_and_iss(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    _, url = await dcr_authorize(http, setup, state="cancel-state")
    codes = stored_grants(setup.fed.gateway, "code")
    final = await sign_in_via_idp(http, setup.fed, url, cancel=True)
    assert final.status_code == 303, final.text[:300]
    location = final.headers["location"]
    assert location.startswith(REDIRECT), location
    assert query_of(location) == {
        "error": "access_denied",
        "error_description": "the user cancelled at the identity provider",
        "state": "cancel-state",
        "iss": setup.base,
    }
    assert stored_grants(setup.fed.gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)


async def test_a_groups_overage_says_so_and_how_to_fix_it(setup: Setup, http: httpx2.AsyncClient) -> None:
    username = new_user(setup, "many-groups", groups=["g-1", "g-2"], groups_overage=True)
    callback = await to_callback(http, setup, login="many-groups")
    codes = stored_grants(setup.fed.gateway, "code")
    answer = await http.get(callback)
    text = (
        "Microsoft did not send your groups: you are in more groups than fit in a token (groups "
        "overage). Ask your administrator to send only the groups assigned to the application, or "
        "to use app roles instead of groups."
    )
    assert_refused(answer, 502, ("Sign-in with Microsoft failed", text))
    assert stored_grants(setup.fed.gateway, "code") == codes
    assert await federated_user(setup.fed.gateway, username) is None
    await wait_for_audit(setup.audit, "login.failed", detail=f"idp entra: {text}")
    await assert_not_signed_in(http, setup.base)


async def test_the_idp_gets_bastions_own_pkce_state_nonce_and_never_resource(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    gateway = setup.fed.gateway
    client_id = await register_public_client(http, setup.base, REDIRECT)
    resource = gateway.url("a")
    seen: list[dict[str, str]] = []
    for state in ("client-state-1", "client-state-2"):
        proof = pkce()
        url = authorize_url(
            setup.base, client_id=client_id, resource=resource, challenge=proof.challenge, state=state
        )
        to_idp = await through_bastion_to_idp(http, url)
        location = to_idp.headers["location"]
        assert location.startswith(setup.fed.idp.authorization_endpoint + "?"), location
        sent = query_of(location)
        assert "resource" not in sent  # Entra answers AADSTS9010010 to a resource it does not expect
        assert sent["client_id"] == "bastion-gateway"
        assert sent["redirect_uri"] == setup.fed.callback
        assert sent["response_type"] == "code"
        assert set(sent["scope"].split()) == {"openid", "profile", "email", "offline_access"}
        assert sent["code_challenge_method"] == "S256"
        assert len(sent["code_challenge"]) == 43
        assert sent["code_challenge"] != proof.challenge
        assert sent["state"] != state
        assert len(sent["state"]) >= 43
        assert sent["nonce"]
        assert len(sent["nonce"]) >= 43
        assert sent["nonce"] != sent["state"]
        seen.append(sent)
    first, second = seen
    for key in ("state", "nonce", "code_challenge"):
        assert first[key] != second[key], key  # fresh for every sign-in

    # the IdP (which rejects any resource parameter) completes the second one
    callback = await idp_callback(http, location, callback=setup.fed.callback)
    code = redirected_code(await http.get(callback), state="client-state-2")
    tokens = await exchange_code(
        http, setup.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
    )
    assert tokens.status_code == 200, tokens.text
