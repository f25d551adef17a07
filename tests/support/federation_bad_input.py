"""Bastion in front of an Entra-like IdP for the bad-input tests
(``tests/flows/test_federation_bad_input_*.py``): the set-up each module starts once, and the
steps and checks they share (a sign-in up to the IdP's redirect back, a refusal page, the code
redirected to the MCP client, audit counts)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from tests.support.federation import (
    ALICE,
    Federation,
    callback_url,
    idp_callback,
    idp_provider,
    register_public_client,
    through_bastion_to_idp,
)
from tests.support.federation_checks import jsonl_audit, message_page
from tests.support.gateway import run_gateway
from tests.support.idp import require_idp_packages, run_idp, secret_client
from tests.support.oauth import authorize_url, pkce, query_of
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

REDIRECT = "http://127.0.0.1:53682/callback"
TRUSTED = "trusted-desktop"
SLOW_TIMEOUT = 1.0  # the "slow" provider's timeout (seconds)


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


@contextlib.contextmanager
def bad_input_setup(tmp: Path) -> Iterator[Setup]:
    """One Bastion and one Entra-like IdP, serving the providers "entra" and "slow" (one
    registration at the IdP, two callbacks), and "flaky": an IdP on a reserved port that a test
    starts and stops itself; a trusted pre-registered client; audit records in ``tmp``."""
    require_idp_packages()
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


def new_user(setup: Setup, login: str, **claims: Any) -> str:
    """Add a user at the IdP who never signed in to Bastion; the username Bastion would give them."""
    email = f"{login}@contoso.com"
    setup.fed.idp.put_user(
        login, {"sub": f"{login}-sub", "oid": f"oid-{login}", "email": email, "name": login, **claims}
    )
    return f"entra:{email}"


async def dcr_authorize(http: httpx2.AsyncClient, setup: Setup, *, state: str = "st-1") -> tuple[str, str]:
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


async def to_callback(http: httpx2.AsyncClient, setup: Setup, login: str = "alice") -> str:
    """Consent, sign in at the IdP: the IdP's redirect back to Bastion (not yet followed)."""
    _, url = await dcr_authorize(http, setup)
    to_idp = await through_bastion_to_idp(http, url)
    location = to_idp.headers.get("location", "")
    assert location.startswith(setup.fed.idp.base), to_idp.text[:500]
    return await idp_callback(http, location, callback=setup.fed.callback, login=login)


async def pending_trusted(http: httpx2.AsyncClient, setup: Setup) -> str:
    """The trusted client's authorization request, waiting at Bastion's sign-in choice: its handle."""
    url = authorize_url(
        setup.base, client_id=TRUSTED, resource=setup.fed.gateway.url("a"), challenge=pkce().challenge
    )
    response = await http.get(url)
    assert response.status_code == 303, response.text[:300]
    location = response.headers["location"]
    assert location.startswith("/login?request="), location
    return query_of(location)["request"]


def audit_count(setup: Setup, event: str, detail: str) -> int:
    return sum(1 for r in jsonl_audit(setup.audit) if r.get("event") == event and r.get("detail") == detail)


def assert_refused(response: httpx2.Response, status: int, page: tuple[str, str]) -> None:
    """A page (never a redirect: nothing goes back to the MCP client) with this status and text,
    and no token in it."""
    assert response.status_code == status, response.text[:500]
    assert "location" not in response.headers
    assert message_page(response) == page
    assert "code=" not in response.text
    assert "eyJ" not in response.text  # no JWT (ID token) on the page


def redirected_code(response: httpx2.Response, state: str = "st-1") -> str:
    assert response.status_code in (302, 303), response.text[:500]
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    answer = query_of(location)
    assert answer.get("state") == state, answer
    assert "code" in answer, answer
    return answer["code"]
