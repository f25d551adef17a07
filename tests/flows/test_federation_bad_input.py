"""Bad input on the way through an enterprise IdP (issue #4, "How it is tested"): an IdP that is
down or slow, a callback whose ``state`` is reused, unknown, missing or from another browser, an
ID token that is forged or not for us, a wrong or missing RFC 9207 ``iss``, clock skew at the
edge of the tolerance, a consent skipped by a forged POST, the user cancelling at the IdP and a
groups overage.

Every refusal is checked for what the user sees (status, heading, message) and for what did NOT
happen: no code stored for the MCP client, no redirect carrying one, no Bastion user created, the
browser not signed in, and a ``login.failed`` audit record naming the IdP.

One Bastion and one Entra-like IdP for the module; a second IdP ("flaky", on a reserved port) is
started and stopped inside the test that needs it down.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from bastion.idp.oidc import SKEW_S
from tests.support.federation import (
    ALICE,
    Federation,
    assert_not_signed_in,
    callback_url,
    federated_user,
    idp_callback,
    idp_provider,
    jsonl_audit,
    message_page,
    register_public_client,
    sign_in_via_idp,
    through_bastion_to_idp,
    wait_for_audit,
)
from tests.support.gateway import run_gateway
from tests.support.idp import query_params, require_idp_packages, run_idp, secret_client
from tests.support.oauth import (
    authorize_url,
    browser,
    exchange_code,
    hidden_fields,
    pkce,
    query_of,
    stored_grants,
)
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

pytestmark = pytest.mark.node

REDIRECT = "http://127.0.0.1:53682/callback"
TRUSTED = "trusted-desktop"
ID_TOKEN_TTL = 3600  # the test IdP's default id_token_ttl
SLOW_TIMEOUT = 1.0  # the "slow" provider's timeout (seconds)
IDP_DELAY_MS = 5000  # how long the IdP sits on a request when made slow: well past the timeout
MARGIN = 2.0  # seconds allowed on top of a timeout before it counts as a hang

EXPIRED = (
    "Sign-in request expired",
    "This sign-in is no longer valid (it expired, was already used, or was started in another "
    "browser). Go back to your application and connect again.",
)
NOT_VALID = "The identity provider's ID token is not valid"


@dataclass
class Setup:
    fed: Federation
    audit: Path
    tmp: Path
    flaky_port: int
    flaky_client: dict[str, Any]

    @property
    def base(self) -> str:
        return self.fed.gateway.base


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_idp_packages()
    tmp: Path = tmp_path_factory.mktemp("federation-bad")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # one registration at the IdP serves both "entra" and "slow" (same tenant, two callbacks)
    client = secret_client("bastion-gateway", [callback_url(base, "entra"), callback_url(base, "slow")])
    flaky_port = free_port()  # nothing listens there until a test starts an IdP on it
    flaky_client = secret_client("bastion-flaky", [callback_url(base, "flaky")])
    audit = tmp / "audit.jsonl"
    with (
        recording_upstream() as upstream,
        run_idp(tmp, clients=[client], users={"alice": ALICE}) as idp,
    ):
        providers = [
            idp_provider("entra", idp, client, grants=[{"role": "Sales.Write", "groups": ["sales"]}]),
            idp_provider("slow", idp, client, label="Contoso (slow link)", timeout=SLOW_TIMEOUT),
            {
                "name": "flaky",
                "preset": "entra",
                "label": "Fabrikam",
                "issuer": f"http://127.0.0.1:{flaky_port}/tenant-f/v2.0",
                "client_id": flaky_client["client_id"],
                "client_secret": flaky_client["client_secret"],
                "timeout": 2,
            },
        ]
        trusted = {
            "client_id": TRUSTED,
            "name": "Trusted desktop",
            "redirect_uris": [REDIRECT],
            "trusted": True,
        }
        config = {
            "auth": {"enabled": True, "registration": {"max_per_hour_per_address": 1000}},
            "identity_providers": providers,
            "clients": [trusted],
            "audit": {"jsonl_path": str(audit), "flush_interval": 0.05},
        }
        upstreams = [{"name": "a", "http": {"url": upstream.url}}]
        with run_gateway(tmp, upstreams, extra=config, port=port) as gateway:
            yield Setup(
                Federation(gateway, idp, client["client_secret"]), audit, tmp, flaky_port, flaky_client
            )


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


# ----------------------------------------------------------------------------------- helpers


def _new_user(setup: Setup, login: str, **claims: Any) -> str:
    """Add a user at the IdP who never signed in to Bastion; the username Bastion would give them."""
    email = f"{login}@contoso.com"
    setup.fed.idp.put_user(
        login, {"sub": f"{login}-sub", "oid": f"oid-{login}", "email": email, "name": login, **claims}
    )
    return f"entra:{email}"


async def _authorize(http: httpx2.AsyncClient, setup: Setup, *, state: str = "st-1") -> tuple[str, str]:
    """A dynamically registered client's authorization request; (client_id, authorize URL)."""
    client_id = await register_public_client(http, setup.base, REDIRECT)
    url = authorize_url(
        setup.base,
        client_id=client_id,
        resource=setup.fed.gateway.url("a"),
        challenge=pkce().challenge,
        state=state,
    )
    return client_id, url


async def _to_callback(http: httpx2.AsyncClient, setup: Setup, login: str = "alice") -> str:
    """Consent, sign in at the IdP: the IdP's redirect back to Bastion (not yet followed)."""
    _, url = await _authorize(http, setup)
    to_idp = await through_bastion_to_idp(http, url)
    location = to_idp.headers.get("location", "")
    assert location.startswith(setup.fed.idp.base), to_idp.text[:500]
    return await idp_callback(http, location, callback=setup.fed.callback, login=login)


async def _pending_trusted(http: httpx2.AsyncClient, setup: Setup) -> str:
    """The trusted client's authorization request, waiting at Bastion's sign-in choice: its handle."""
    url = authorize_url(
        setup.base, client_id=TRUSTED, resource=setup.fed.gateway.url("a"), challenge=pkce().challenge
    )
    response = await http.get(url)
    assert response.status_code == 303, response.text[:300]
    location = response.headers["location"]
    assert location.startswith("/login?request="), location
    return query_of(location)["request"]


def _audit_count(setup: Setup, event: str, detail: str) -> int:
    return sum(1 for r in jsonl_audit(setup.audit) if r.get("event") == event and r.get("detail") == detail)


def _assert_refused(response: httpx2.Response, status: int, page: tuple[str, str]) -> None:
    """A page (never a redirect: nothing goes back to the MCP client) with this status and text,
    and no token in it."""
    assert response.status_code == status, response.text[:500]
    assert "location" not in response.headers
    assert message_page(response) == page
    assert "code=" not in response.text
    assert "eyJ" not in response.text  # no JWT (ID token) on the page


def _redirected_code(response: httpx2.Response, state: str = "st-1") -> str:
    assert response.status_code in (302, 303), response.text[:500]
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    answer = query_of(location)
    assert answer.get("state") == state, answer
    assert "code" in answer, answer
    return answer["code"]


# --------------------------------------------------------------------------- IdP down / slow


async def test_an_idp_that_is_down_gets_a_clear_page_at_once(setup: Setup, http: httpx2.AsyncClient) -> None:
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    handle = await _pending_trusted(http, setup)
    start = f"{setup.base}/login/idp/flaky?request={handle}"
    unreachable = ("Sign-in with Fabrikam failed", "Fabrikam cannot be reached")
    detail = "idp flaky: Fabrikam cannot be reached"
    failures = _audit_count(setup, "login.failed", detail)

    began = time.monotonic()
    down = await http.get(start)
    assert time.monotonic() - began < 2 + MARGIN
    _assert_refused(down, 502, unreachable)
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
    _assert_refused(gone, 502, unreachable)
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
    failures = _audit_count(setup, "login.failed", detail)
    handle = await _pending_trusted(http, setup)
    start = f"{setup.base}/login/idp/slow?request={handle}"
    too_slow = ("Sign-in with Contoso (slow link) failed", "Contoso (slow link) did not answer in time")

    # discovery takes longer than the provider's timeout: no redirect to the IdP
    with idp.changed(delay_ms=IDP_DELAY_MS, delay_endpoints=["discovery"]):
        began = time.monotonic()
        slow = await http.get(start)
        elapsed = time.monotonic() - began
    assert SLOW_TIMEOUT <= elapsed < SLOW_TIMEOUT + MARGIN, elapsed
    _assert_refused(slow, 502, too_slow)

    # discovery is quick again; the user signs in; then the token endpoint is slow
    to_idp = await http.get(start)
    assert to_idp.status_code == 303, to_idp.text[:300]
    callback = await idp_callback(http, to_idp.headers["location"], callback=callback_url(setup.base, "slow"))
    with idp.changed(delay_ms=IDP_DELAY_MS, delay_endpoints=["token"]):
        began = time.monotonic()
        slow = await http.get(callback)
        elapsed = time.monotonic() - began
    assert SLOW_TIMEOUT <= elapsed < SLOW_TIMEOUT + MARGIN, elapsed
    _assert_refused(slow, 502, too_slow)

    await wait_for_audit(setup.audit, "login.failed", detail=detail, count=failures + 2)
    assert stored_grants(gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)


# ------------------------------------------------------------------------------- the state


async def test_a_replayed_callback_is_expired(setup: Setup, http: httpx2.AsyncClient) -> None:
    callback = await _to_callback(http, setup)
    _redirected_code(await http.get(callback))
    codes = stored_grants(setup.fed.gateway, "code")
    replay = await http.get(callback)
    _assert_refused(replay, 400, EXPIRED)
    assert stored_grants(setup.fed.gateway, "code") == codes


async def test_an_unknown_or_missing_state_is_expired_and_burns_nothing(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    callback = await _to_callback(http, setup)
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
        _assert_refused(answer, 400, EXPIRED)
    assert stored_grants(gateway, "code") == codes
    await assert_not_signed_in(http, setup.base)
    # none of that consumed the real state: the genuine callback still works
    _redirected_code(await http.get(callback))


async def test_a_state_from_another_browser_is_expired(setup: Setup, http: httpx2.AsyncClient) -> None:
    callback = await _to_callback(http, setup)
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    async with browser() as other:
        assert (await other.get(f"{setup.base}/login")).status_code == 200  # a Bastion session of its own
        stolen = await other.get(callback)
        _assert_refused(stolen, 400, EXPIRED)
        await assert_not_signed_in(other, setup.base)
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
    username = _new_user(setup, login)
    callback = await _to_callback(http, setup, login=login)
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    changes, text = _tampering(case)
    failures = _audit_count(setup, "login.failed", f"idp entra: {text}")
    with setup.fed.idp.changed(**changes):
        answer = await http.get(callback)
    _assert_refused(answer, 502, ("Sign-in with Microsoft failed", text))
    assert stored_grants(gateway, "code") == codes
    assert await federated_user(gateway, username) is None
    await wait_for_audit(setup.audit, "login.failed", detail=f"idp entra: {text}", count=failures + 1)
    await assert_not_signed_in(http, setup.base)


async def test_the_entra_v1_issuer_form_signs_in_the_same_user(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    """Entra may name the tenant as ``https://sts.windows.net/<tid>/`` (v1): accepted for the
    configured tenant, and the person is the same Bastion user as with the v2.0 issuer."""
    username = _new_user(setup, "victor", tid="tenant-a")
    _redirected_code(await http.get(await _to_callback(http, setup, login="victor")))
    v2 = await federated_user(setup.fed.gateway, username)
    assert v2 is not None
    async with browser() as other:
        callback = await _to_callback(other, setup, login="victor")
        with setup.fed.idp.changed(id_token_claims={"iss": "https://sts.windows.net/tenant-a/"}):
            answer = await other.get(callback)
    assert answer.status_code in (302, 303), message_page(answer)
    _redirected_code(answer)
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
    username = _new_user(setup, login)
    if iss == "wrong":  # what a mix-up looks like: a response naming another IdP
        params = query_params(await _to_callback(http, setup, login=login))
        assert params["iss"] == idp.issuer
        params["iss"] = "http://127.0.0.1:9/tenant-evil/v2.0"
        callback = f"{setup.fed.callback}?{urlencode(params)}"
        text = "The sign-in response came from another identity provider"
    else:  # the IdP leaves it out of its redirect, although its discovery (read by Bastion) offers it
        _, url = await _authorize(http, setup)
        location = (await through_bastion_to_idp(http, url)).headers["location"]
        with idp.changed(authorization_response_iss=False):
            callback = await idp_callback(http, location, callback=setup.fed.callback, login=login)
        assert "iss" not in query_params(callback)
        text = "The sign-in response is incomplete"
    gateway = setup.fed.gateway
    codes = stored_grants(gateway, "code")
    failures = _audit_count(setup, "login.failed", f"idp entra: {text}")
    answer = await http.get(callback)
    _assert_refused(answer, 502, ("Sign-in with Microsoft failed", text))
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
    callback = await _to_callback(http, setup)
    codes = stored_grants(setup.fed.gateway, "code")
    failures = _audit_count(setup, "login.failed", f"idp entra: {NOT_VALID}")
    with setup.fed.idp.changed(id_token_time_offset=offset):
        answer = await http.get(callback)
    if accepted:
        _redirected_code(answer)
        assert stored_grants(setup.fed.gateway, "code") == codes + 1
    else:
        _assert_refused(answer, 502, ("Sign-in with Microsoft failed", NOT_VALID))
        assert stored_grants(setup.fed.gateway, "code") == codes
        await assert_not_signed_in(http, setup.base)
        await wait_for_audit(
            setup.audit, "login.failed", detail=f"idp entra: {NOT_VALID}", count=failures + 1
        )


# ------------------------------------------------------------------------------- consent


async def test_a_forged_consent_post_is_refused_and_counts_for_nothing(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    _, url = await _authorize(http, setup)
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
        _, other_url = await _authorize(other, setup)
        other_handle = query_of((await other.get(other_url)).headers["location"])["request"]
        other_consent = await other.get(f"{setup.base}/login/idp/entra?request={other_handle}")
        other_csrf = hidden_fields(other_consent.text)["csrf"]
    refused = ("Request refused", "The form expired or did not come from this page. Start again.")
    for csrf in (None, "", "forged", login_form_csrf, other_csrf):
        form = {"request": handle, "decision": "allow"} | ({"csrf": csrf} if csrf is not None else {})
        forged = await http.post(f"{setup.base}/login/idp/entra/consent", data=form)
        _assert_refused(forged, 403, refused)
    # nothing was allowed: the same request still asks first, and does not go to the IdP
    again = await http.get(start)
    assert again.status_code == 200, again.headers.get("location")
    assert 'name="decision"' in again.text


async def test_consent_is_asked_of_dcr_clients_and_a_trusted_flow_does_not_bypass_it(
    setup: Setup, http: httpx2.AsyncClient
) -> None:
    gateway = setup.fed.gateway
    dcr_id, dcr_url = await _authorize(http, setup, state="dcr-state")
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
    code = _redirected_code(await http.get(callback), state="trusted-state")  # for the trusted client
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
    _, url = await _authorize(http, setup, state="cancel-state")
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
    username = _new_user(setup, "many-groups", groups=["g-1", "g-2"], groups_overage=True)
    callback = await _to_callback(http, setup, login="many-groups")
    codes = stored_grants(setup.fed.gateway, "code")
    answer = await http.get(callback)
    text = (
        "Microsoft did not send your groups: you are in more groups than fit in a token (groups "
        "overage). Ask your administrator to send only the groups assigned to the application, or "
        "to use app roles instead of groups."
    )
    _assert_refused(answer, 502, ("Sign-in with Microsoft failed", text))
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
    code = _redirected_code(await http.get(callback), state="client-state-2")
    tokens = await exchange_code(
        http, setup.base, code=code, verifier=proof.verifier, client_id=client_id, resource=resource
    )
    assert tokens.status_code == 200, tokens.text
