"""Bad input from or about the enterprise IdP (issue #4, "How it is tested"): an IdP that is
down or slow, an ID token that is forged or not for us, a wrong or missing RFC 9207 ``iss``, clock
skew at the edge of the tolerance.

Every refusal is checked for what the user sees (status, heading, message) and for what did NOT
happen: no code stored for the MCP client, no redirect carrying one, no Bastion user created, the
browser not signed in, and a ``login.failed`` audit record naming the IdP.

One Bastion and one Entra-like IdP for the module (``tests/support/federation_bad_input.py``); a
second IdP ("flaky", on a reserved port) is started and stopped inside the test that needs it down.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from bastion.idp.oidc import SKEW_S
from tests.support.federation import ALICE, callback_url, federated_user, idp_callback, through_bastion_to_idp
from tests.support.federation_bad_input import (
    SLOW_TIMEOUT,
    Setup,
    assert_refused,
    audit_count,
    bad_input_setup,
    dcr_authorize,
    new_user,
    pending_trusted,
    redirected_code,
    to_callback,
)
from tests.support.federation_checks import assert_not_signed_in, message_page, wait_for_audit
from tests.support.idp import query_params, run_idp
from tests.support.oauth import browser, stored_grants

pytestmark = pytest.mark.node

ID_TOKEN_TTL = 3600  # the test IdP's default id_token_ttl
IDP_DELAY_MS = 5000  # how long the IdP sits on a request when made slow: well past the timeout
MARGIN = 2.0  # seconds allowed on top of a timeout before it counts as a hang

NOT_VALID = "The identity provider's ID token is not valid"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with bad_input_setup(tmp_path_factory.mktemp("federation-bad-idp")) as setup:
        yield setup


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


# --------------------------------------------------------------------------- IdP down / slow


async def test_an_idp_that_is_down_gets_a_clear_page_at_once(setup: Setup, http: httpx2.AsyncClient) -> None:
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    handle = await pending_trusted(http, setup)
    start = f"{setup.base}/login/idp/flaky?request={handle}"
    unreachable = ("Sign-in with Fabrikam failed", "Fabrikam cannot be reached")
    detail = "idp flaky: Fabrikam cannot be reached"
    failures = audit_count(setup, "login.failed", detail)

    began = time.monotonic()
    down = await http.get(start)
    assert time.monotonic() - began < 2 + MARGIN
    assert_refused(down, 502, unreachable)
    await wait_for_audit(setup.audit, "login.failed", detail=detail, count=failures + 1)

    # the IdP comes up: the same pending request goes on to it...
    with run_idp(
        setup.tmp,
        issuer_path="/tenant-f/v2.0",
        port=setup.flaky_port,
        clients=[setup.flaky_client],
        users={"alice": ALICE},
    ) as flaky:
        to_idp = await http.get(start)
        assert to_idp.status_code == 303, to_idp.text[:300]
        assert to_idp.headers["location"].startswith(flaky.authorization_endpoint)
        callback = await idp_callback(
            http, to_idp.headers["location"], callback=callback_url(setup.base, "flaky")
        )
    # ...and goes down between the user's sign-in there and Bastion redeeming the IdP's code
    began = time.monotonic()
    gone = await http.get(callback)
    assert time.monotonic() - began < 2 + MARGIN
    assert_refused(gone, 502, unreachable)
    await wait_for_audit(setup.audit, "login.failed", detail=detail, count=failures + 2)
    assert stored_grants(gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)
    assert await federated_user(gateway, "flaky:alice@contoso.com") is None


async def test_a_slow_idp_gets_a_clear_page_within_the_timeout(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    idp, gateway = setup.fed.idp, setup.fed.gateway
    codes = stored_grants(gateway, "code")
    detail = "idp slow: Contoso (slow link) did not answer in time"
    failures = audit_count(setup, "login.failed", detail)
    handle = await pending_trusted(http, setup)
    start = f"{setup.base}/login/idp/slow?request={handle}"
    too_slow = ("Sign-in with Contoso (slow link) failed", "Contoso (slow link) did not answer in time")

    # discovery takes longer than the provider's timeout: no redirect to the IdP
    with idp.changed(delay_ms=IDP_DELAY_MS, delay_endpoints=["discovery"]):
        began = time.monotonic()
        slow = await http.get(start)
        elapsed = time.monotonic() - began
    assert SLOW_TIMEOUT <= elapsed < SLOW_TIMEOUT + MARGIN, elapsed
    assert_refused(slow, 502, too_slow)

    # discovery is quick again; the user signs in; then the token endpoint is slow
    to_idp = await http.get(start)
    assert to_idp.status_code == 303, to_idp.text[:300]
    callback = await idp_callback(http, to_idp.headers["location"], callback=callback_url(setup.base, "slow"))
    with idp.changed(delay_ms=IDP_DELAY_MS, delay_endpoints=["token"]):
        began = time.monotonic()
        slow = await http.get(callback)
        elapsed = time.monotonic() - began
    assert SLOW_TIMEOUT <= elapsed < SLOW_TIMEOUT + MARGIN, elapsed
    assert_refused(slow, 502, too_slow)

    await wait_for_audit(setup.audit, "login.failed", detail=detail, count=failures + 2)
    assert stored_grants(gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)


# -------------------------------------------------------------------- the ID token, RFC 9207


def _tampering(case: str) -> tuple[dict[str, Any], str]:
    """IdP switches that spoil the ID token, and the message the user then reads."""
    now = int(time.time())
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "bad-signature": ({"id_token_bad_signature": True}, NOT_VALID),
        # a symmetric alg would let anyone holding the client secret mint ID tokens
        "alg-hs256": (
            {"id_token_header": {"alg": "HS256"}},
            "The identity provider's ID token is not acceptable",
        ),
        "unknown-kid": (
            {"id_token_header": {"kid": "not-a-key-of-the-idp"}},
            "The ID token was signed with an unknown key",
        ),
        "wrong-aud": ({"id_token_claims": {"aud": "another-app"}}, NOT_VALID),
        "wrong-azp": (
            {"id_token_claims": {"azp": "another-app"}},
            "The ID token was issued to another application",
        ),
        "wrong-nonce": (
            {"id_token_claims": {"nonce": "not-this-sign-in"}},
            "The sign-in response does not belong to this sign-in",
        ),
        "no-nonce": (
            {"id_token_claims": {"nonce": None}},
            "The sign-in response does not belong to this sign-in",
        ),
        "wrong-iss": (
            {"id_token_claims": {"iss": "http://127.0.0.1:9/tenant-evil/v2.0"}},
            "The ID token was issued by another identity provider",
        ),
        # Entra's v1 issuer form is accepted for the configured tenant only
        "v1-iss-of-another-tenant": (
            {"id_token_claims": {"iss": "https://sts.windows.net/tenant-b/", "tid": "tenant-b"}},
            "The ID token was issued by another identity provider",
        ),
        "v1-iss-of-a-tenant-named-like-part-of-ours": (
            {"id_token_claims": {"iss": "https://sts.windows.net/a/", "tid": "a"}},
            "The ID token was issued by another identity provider",
        ),
        "iat-in-the-future": ({"id_token_time_offset": SKEW_S + 60}, NOT_VALID),
        "exp-in-the-past": ({"id_token_claims": {"exp": now - SKEW_S - 60}}, NOT_VALID),
    }
    return cases[case]


@pytest.mark.parametrize(
    "case",
    [
        "bad-signature",
        "alg-hs256",
        "unknown-kid",
        "wrong-aud",
        "wrong-azp",
        "wrong-nonce",
        "no-nonce",
        "wrong-iss",
        "v1-iss-of-another-tenant",
        "v1-iss-of-a-tenant-named-like-part-of-ours",
        "iat-in-the-future",
        "exp-in-the-past",
    ],
)
async def test_an_unacceptable_id_token_signs_nobody_in(
    setup: Setup, http: httpx2.AsyncClient, case: str
) -> None:
    login = f"mallory-{case}"
    username = new_user(setup, login)
    callback = await to_callback(http, setup, login=login)
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    changes, text = _tampering(case)
    failures = audit_count(setup, "login.failed", f"idp entra: {text}")
    with setup.fed.idp.changed(**changes):
        answer = await http.get(callback)
    assert_refused(answer, 502, ("Sign-in with Microsoft failed", text))
    assert stored_grants(gateway, "code") == codes
    assert await federated_user(gateway, username) is None
    await wait_for_audit(setup.audit, "login.failed", detail=f"idp entra: {text}", count=failures + 1)
    await assert_not_signed_in(http, setup.base)


async def test_the_entra_v1_issuer_form_signs_in_the_same_user(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    """Entra may name the tenant as ``https://sts.windows.net/<tid>/`` (v1): accepted for the
    configured tenant, and the person is the same Bastion user as with the v2.0 issuer."""
    username = new_user(setup, "victor", tid="tenant-a")
    redirected_code(await http.get(await to_callback(http, setup, login="victor")))
    v2 = await federated_user(setup.fed.gateway, username)
    assert v2 is not None
    async with browser() as other:
        callback = await to_callback(other, setup, login="victor")
        with setup.fed.idp.changed(id_token_claims={"iss": "https://sts.windows.net/tenant-a/"}):
            answer = await other.get(callback)
    assert answer.status_code in (302, 303), message_page(answer)
    redirected_code(answer)
    again = await federated_user(setup.fed.gateway, username)
    assert again is not None
    assert again.user_id == v2.user_id  # the same person, whichever issuer form Entra used


@pytest.mark.parametrize("iss", ["wrong", "missing"])
async def test_the_authorization_response_iss_must_be_the_idps(
    setup: Setup, http: httpx2.AsyncClient, iss: str
) -> None:
    """RFC 9207: the IdP advertises ``authorization_response_iss_parameter_supported``, so its
    redirect back must carry its own issuer (mix-up defence)."""
    idp = setup.fed.idp
    assert idp.metadata["authorization_response_iss_parameter_supported"] is True
    login = f"mallory-iss-{iss}"
    username = new_user(setup, login)
    if iss == "wrong":  # what a mix-up looks like: a response naming another IdP
        params = query_params(await to_callback(http, setup, login=login))
        assert params["iss"] == idp.issuer
        params["iss"] = "http://127.0.0.1:9/tenant-evil/v2.0"
        callback = f"{setup.fed.callback}?{urlencode(params)}"
        text = "The sign-in response came from another identity provider"
    else:  # the IdP leaves it out of its redirect, although its discovery (read by Bastion) offers it
        _, url = await dcr_authorize(http, setup)
        location = (await through_bastion_to_idp(http, url)).headers["location"]
        with idp.changed(authorization_response_iss=False):
            callback = await idp_callback(http, location, callback=setup.fed.callback, login=login)
        assert "iss" not in query_params(callback)
        text = "The sign-in response is incomplete"
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    failures = audit_count(setup, "login.failed", f"idp entra: {text}")
    answer = await http.get(callback)
    assert_refused(answer, 502, ("Sign-in with Microsoft failed", text))
    assert stored_grants(gateway, "code") == codes
    assert await federated_user(gateway, username) is None
    await wait_for_audit(setup.audit, "login.failed", detail=f"idp entra: {text}", count=failures + 1)
    await assert_not_signed_in(http, setup.base)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (SKEW_S - 30, True),  # iat (and exp) a little ahead: an IdP clock slightly fast
        (SKEW_S + 30, False),
        (-(ID_TOKEN_TTL + SKEW_S - 30), True),  # exp just behind: an IdP clock slightly slow
        (-(ID_TOKEN_TTL + SKEW_S + 30), False),
    ],
    ids=["ahead-within-skew", "ahead-beyond-skew", "behind-within-skew", "behind-beyond-skew"],
)
async def test_clock_skew_at_the_edge_of_the_tolerance(
    setup: Setup, http: httpx2.AsyncClient, offset: int, accepted: bool
) -> None:
    callback = await to_callback(http, setup)
    codes = stored_grants(setup.fed.gateway, "code")
    failures = audit_count(setup, "login.failed", f"idp entra: {NOT_VALID}")
    with setup.fed.idp.changed(id_token_time_offset=offset):
        answer = await http.get(callback)
    if accepted:
        redirected_code(answer)
        assert stored_grants(setup.fed.gateway, "code") == codes + 1
    else:
        assert_refused(answer, 502, ("Sign-in with Microsoft failed", NOT_VALID))
        assert stored_grants(setup.fed.gateway, "code") == codes
        await assert_not_signed_in(http, setup.base)
        await wait_for_audit(
            setup.audit, "login.failed", detail=f"idp entra: {NOT_VALID}", count=failures + 1
        )
