"""Policy rules that name roles: a user's roles (from the identity provider, ``idp_roles``, or set
by an administrator, ``roles``) travel in Bastion's access token and reach the policy engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from bastion.core.records import UserRecord
from bastion.oauth.token import user_roles
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import REDIRECT_URI, add_users, list_tools, user_token
from tests.support.policy import IssueTracker
from tests.support.recording import serve_upstream

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def gw(flow_tmp: Path) -> Iterator[Gateway]:
    tracker = IssueTracker()
    extra = {
        "auth": {"enabled": True, "scopes": ["mcp"]},
        "clients": [
            {"client_id": "agent", "name": "Agent", "redirect_uris": [REDIRECT_URI], "trusted": True}
        ],
        "policies": [
            {
                "id": "writers",
                "upstream": "gh",
                "tools": ["create_issue"],
                "allow": {"roles": ["Issues.Write"]},
            },
            {"id": "commenters", "upstream": "gh", "tools": ["comment"], "require_scopes": ["mcp"]},
        ],
    }
    with (
        serve_upstream(tracker),
        run_gateway(
            flow_tmp, [{"name": "gh", "http": {"url": tracker.url}, "annotate_tools": "field"}], extra=extra
        ) as g,
    ):
        yield g


def test_roles_come_from_the_idp_or_the_administrator() -> None:
    def user(**attributes: object) -> UserRecord:
        return UserRecord(user_id="u", username="u", password_hash=None, attributes=dict(attributes))

    assert user_roles(user(idp_roles=["B", "A", "A"])) == ["A", "B"]
    assert user_roles(user(roles="x, y,")) == ["x", "y"]
    assert user_roles(user(roles=7)) == []
    assert user_roles(user()) == []


async def test_a_rule_naming_a_role_allows_its_holders_only(gw: Gateway) -> None:
    await add_users(
        gw,
        {"carol": PASSWORD, "dave": PASSWORD},
        attributes={"carol": {"idp_roles": ["Issues.Write"]}, "dave": {"roles": "Issues.Read"}},
    )
    names: dict[str, set[str]] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for who in ("carol", "dave"):
            tokens = await user_token(
                gw.base, client_id="agent", resource=gw.url("gh"), username=who, password=PASSWORD
            )
            claims = jwt.decode(str(tokens["access_token"]), options={"verify_signature": False})
            assert claims["roles"] == (["Issues.Write"] if who == "carol" else ["Issues.Read"])
            listed = await list_tools(http, gw.url("gh"), str(tokens["access_token"]))
            names[who] = {t["name"] for t in listed.json()["result"]["tools"]}
    assert "create_issue" in names["carol"]
    assert "create_issue" not in names["dave"]


async def test_tool_annotations_name_the_scopes_policy_asks_for(gw: Gateway) -> None:
    """#234 annotation on an upstream without client-supplied tokens: a tool whose rules require
    scopes of Bastion's token is ``oauth2`` with them, the others ``none``."""
    await add_users(gw, {"erin": PASSWORD}, attributes={"erin": {"roles": "Issues.Write"}})
    tokens = await user_token(
        gw.base, client_id="agent", resource=gw.url("gh"), username="erin", password=PASSWORD
    )
    async with httpx2.AsyncClient(timeout=30) as http:
        listed = await list_tools(http, gw.url("gh"), str(tokens["access_token"]))
    tools = {t["name"]: t for t in listed.json()["result"]["tools"]}
    assert tools["comment"]["authorization"] == {"method": "oauth2", "requiredScopes": ["mcp"]}
    assert tools["create_issue"]["authorization"] == {"method": "none"}
