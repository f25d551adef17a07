"""Policy rules that name roles: a user's roles (from the identity provider, ``idp_roles``, or set
by an administrator, ``roles``) travel in Bastion's access token and reach the policy engine; so
do the user attributes ``policy.user_attributes`` declares (the token's ``attrs`` claim)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
import yaml

from bastion.audit import events
from bastion.core.records import UserRecord
from bastion.oauth.token import user_roles
from tests.support.federation_checks import audit_records
from tests.support.gateway import BASTION, Gateway, run_gateway, venv_env
from tests.support.oauth import REDIRECT_URI, add_users, list_tools, user_token
from tests.support.policy import IssueTracker, McpClient, rpc
from tests.support.procs import REPO_ROOT
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
            {
                "id": "finance",
                "upstream": "gh",
                "tools": ["list_issues"],
                "allow": {"attributes": {"department": ["finance"]}},
            },
        ],
        "policy": {"user_attributes": {"department": "string", "level": "long"}},
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


async def test_a_rule_naming_an_attribute_allows_the_users_who_have_it(gw: Gateway) -> None:
    ids = await add_users(
        gw,
        {"fran": PASSWORD, "sam": PASSWORD},
        attributes={"fran": {"department": "finance", "level": "3"}, "sam": {"department": "sales"}},
    )
    async with httpx2.AsyncClient(timeout=30) as http:
        clients: dict[str, McpClient] = {}
        for who in ("fran", "sam"):
            tokens = await user_token(
                gw.base, client_id="agent", resource=gw.url("gh"), username=who, password=PASSWORD
            )
            claims = jwt.decode(str(tokens["access_token"]), options={"verify_signature": False})
            expected = {"department": "finance", "level": 3} if who == "fran" else {"department": "sales"}
            assert claims["attrs"] == expected  # typed as declared: level is a number
            clients[who] = McpClient(http, gw.url("gh"), str(tokens["access_token"]), "modern")
        allowed = rpc(await clients["fran"].call("list_issues", {}))
        assert "result" in allowed, allowed
        refused = rpc(await clients["sam"].call("list_issues", {}))
        assert refused["error"]["code"] == -32013, refused
        assert "'finance'" in refused["error"]["message"]
        assert "list_issues" in await clients["fran"].tool_names()
        assert "list_issues" not in await clients["sam"].tool_names()
    calls = [r for r in audit_records(gw, 100) if r.get("name") == "list_issues"][-2:]
    assert [(r["event"], r["subject"]) for r in calls] == [
        (events.CALL_FORWARDED, ids["fran"]),
        (events.CALL_DENIED, ids["sam"]),
    ]
    assert calls[0]["detail"].startswith("policy: finance")


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BASTION, *args],
        capture_output=True,
        text=True,
        env=venv_env(),
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


async def test_policy_commands_know_the_attributes(gw: Gateway, flow_tmp: Path) -> None:
    await add_users(
        gw, {"gil": PASSWORD, "hal": PASSWORD}, attributes={"gil": {"department": "finance"}, "hal": {}}
    )
    config = ("-c", str(gw.config_path))
    call = ("--client", "agent", "--tool", "gh__list_issues")
    done = bastion("policy", "test", *config, "--user", "gil", *call)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  attributes: department=finance" in done.stdout  # from the store
    assert bastion("policy", "test", *config, "--user", "hal", *call).returncode == 1
    done = bastion("policy", "test", *config, "--user", "hal", "--attr", "department=finance", *call)
    assert done.returncode == 0, done.stdout  # the flag overrides the store
    for wrong, why in (("team=x", "not declared in policy.user_attributes"), ("level=x", "not a valid long")):
        done = bastion("policy", "test", *config, "--user", "hal", "--attr", wrong, *call)
        assert done.returncode == 2
        assert why in done.stderr
    schema = bastion("policy", "schema", *config).stdout
    assert "roles: Set<String>, department?: String, level?: Long }" in schema

    assert "attributes.department" not in bastion("policy", "lint", *config).stdout  # gil has it
    changed = yaml.safe_load(gw.config_path.read_text())
    changed["policies"] = [
        {"upstream": "gh", "tools": ["x"], "allow": {"attributes": {"department": ["legal"]}}}
    ]
    (flow_tmp / "attrs-lint.yaml").write_text(yaml.safe_dump(changed))
    done = bastion("policy", "lint", "-c", str(flow_tmp / "attrs-lint.yaml"))
    assert "allow.attributes.department: no user in the store has department 'legal'" in done.stdout
