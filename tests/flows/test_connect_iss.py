"""RFC 9207 at the connect callback, and refusals on "My connections" in the audit trail.

The SaaS provider (a real oidc-provider) advertises ``authorization_response_iss_parameter_supported``
in its discovery metadata, so a callback for an issuer-discovered connection must carry its
``iss``: a response without it, or with another issuer's, is refused — and refused before the
state is used, so the genuine response that follows still connects. A disconnect form without a
valid CSRF token changes nothing and is audited."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from tests.support.connect import provider_callback, sign_in
from tests.support.connect_web import (
    ConnectStack,
    assert_not_leaked,
    assert_plain_page,
    connect_stack,
    connection_events,
    to_provider,
    vault_record,
)
from tests.support.oauth import add_users, browser, query_of

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]
PASSWORD = "connect-iss-password"
CONNECTED, REFUSED = "connection.connected", "connection.refused"


@pytest.fixture(scope="module")
def stack(flow_tmp: Path) -> Iterator[ConnectStack]:
    with connect_stack(flow_tmp / "iss", "tk-iss-key") as running:
        yield running


@pytest.fixture(scope="module")
async def users(stack: ConnectStack) -> dict[str, str]:
    return await add_users(stack.gateway, {"alice": PASSWORD, "bob": PASSWORD})


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v for k, v in parse_qsl(parts.query)}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return parts._replace(query=urlencode(query)).geturl()


async def test_a_response_without_or_with_another_iss_is_refused_and_keeps_the_state(
    stack: ConnectStack, users: dict[str, str]
) -> None:
    base = stack.gateway.base
    async with browser() as alice:
        await sign_in(alice, base, "alice", PASSWORD)
        callback = await provider_callback(await to_provider(alice, base, "crm"), "alice", base)
        genuine = query_of(callback)
        assert genuine["iss"] == stack.saas.issuer  # the provider sends it, and says so
        code, state = genuine["code"], genuine["state"]
        assert_plain_page(await alice.get(_with_query(callback, iss=None)), 400, code, state)
        assert_plain_page(
            await alice.get(_with_query(callback, iss="https://evil.example")), 400, code, state
        )
        assert await vault_record(stack.gateway, users["alice"], "crm") is None
        connected = assert_plain_page(await alice.get(callback), 200, code, state)  # the state was kept
        assert "Connected Acme CRM" in connected
    records = assert_not_leaked(stack.gateway, [code, state])
    assert connection_events(records, users["alice"]) == [
        (REFUSED, "connection crm: response without the provider's iss"),
        (REFUSED, "connection crm: response without the provider's iss"),
        (CONNECTED, "connection crm (oauth)"),
    ]


async def test_a_disconnect_without_a_valid_csrf_token_is_refused_and_audited(
    stack: ConnectStack, users: dict[str, str]
) -> None:
    base = stack.gateway.base
    async with browser() as bob:
        await sign_in(bob, base, "bob", PASSWORD)
        await bob.get(await provider_callback(await to_provider(bob, base, "crm"), "bob", base))
        assert await vault_record(stack.gateway, users["bob"], "crm") is not None
        for csrf in ("", "forged", "x" * 5000):
            refused = await bob.post(f"{base}/connections/crm/disconnect", data={"csrf": csrf})
            assert_plain_page(refused, 403)
        hostile = await bob.post(f"{base}/connections/%3Cscript%3E/disconnect", data={"csrf": "forged"})
        assert_plain_page(hostile, 403)
        assert await vault_record(stack.gateway, users["bob"], "crm") is not None  # nothing changed
        page = (await bob.get(f"{base}/connections")).text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None
        done = await bob.post(f"{base}/connections/crm/disconnect", data={"csrf": token.group(1)})
        assert "Disconnected Acme CRM" in assert_plain_page(done, 200)
    assert await vault_record(stack.gateway, users["bob"], "crm") is None
    events = connection_events(assert_not_leaked(stack.gateway, ["forged"]), users["bob"])
    refusals = [e for e in events if e[0] == REFUSED]
    assert refusals[:3] == [(REFUSED, "connection crm: disconnect without a valid CSRF token")] * 3
    assert refusals[3] == (REFUSED, "connection (unknown): disconnect without a valid CSRF token")
    assert events[-1] == ("connection.disconnected", "connection crm")
