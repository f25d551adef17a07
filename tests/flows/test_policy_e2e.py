"""Tool-level policy end to end (issue #6): the real ``bastion serve`` with a Cedar policy in a
policy file, in front of a real issue-tracker upstream that echoes every call it gets.

alice (group engineering) sees and calls ``create_issue`` through the client ``claude``; bob
(group sales) does not see it, on either era, on ``/mcp/gh`` and on the aggregate ``/mcp``, and is
refused by name of the rule if he calls it anyway, with nothing reaching the upstream. A token
without ``github:write`` gets a 403 ``insufficient_scope`` challenge naming every scope the call
needs, and the official Python SDK client steps up and succeeds. Arguments must match the rule
as they are forwarded (no traversal, no other case, no look-alikes), and every decision is an
audit record that names its rule. The policy reloads when its file changes and on SIGHUP (a
bad edit keeps the old one), and ``bastion policy test|lint`` answer about the same config."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx2
import pytest
import yaml
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull

from bastion.audit import events
from tests.support.federation_checks import audit_records
from tests.support.gateway import BASTION, Gateway, run_gateway, venv_env
from tests.support.oauth import REDIRECT_URI, add_users, challenge_params, user_token
from tests.support.policy import IssueTracker, McpClient, rpc, rule_file
from tests.support.procs import REPO_ROOT
from tests.support.recording import serve_upstream
from tests.support.sdk_oauth import HeadlessUser, MemoryTokenStorage, sdk_auth

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"
FULL = "mcp github:write"
AUTH = {"enabled": True, "scopes": ["mcp", "github:write"], "required_scopes": ["mcp"]}
CLIENTS = [{"client_id": "claude", "name": "Claude", "redirect_uris": [REDIRECT_URI], "trusted": True}]
POLICY_DENIED = -32013
Token = Callable[..., Awaitable[str]]


def policy_config(policy_file: Path) -> dict[str, object]:
    return {"auth": AUTH, "clients": CLIENTS, "policy": {"files": [str(policy_file)]}}


@pytest.fixture(scope="module")
def tracker() -> Iterator[IssueTracker]:
    server = IssueTracker()
    with serve_upstream(server):
        yield server


@pytest.fixture(scope="module")
def gw(flow_tmp: Path, tracker: IssueTracker) -> Iterator[Gateway]:
    policy_file = flow_tmp / f"policy-{secrets.token_hex(4)}.yaml"
    policy_file.write_text(rule_file())
    upstreams = [{"name": "gh", "http": {"url": tracker.url}}]
    with run_gateway(flow_tmp, upstreams, extra=policy_config(policy_file)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
async def user_ids(gw: Gateway) -> dict[str, str]:
    groups = {"alice": ["engineering"], "bob": ["sales"]}
    return await add_users(gw, {"alice": PASSWORD, "bob": PASSWORD}, groups=groups)


@pytest.fixture(scope="module")
async def token(gw: Gateway, user_ids: dict[str, str]) -> Token:
    """token(user, endpoint=None|"gh", scope=FULL): an access token of ``claude`` (cached)."""
    cache: dict[tuple[str, str, str], str] = {}

    async def get(user: str, endpoint: str | None = "gh", scope: str = FULL) -> str:
        key = (user, gw.url(endpoint), scope)
        if key not in cache:
            body = await user_token(
                gw.base, client_id="claude", resource=key[1], username=user, password=PASSWORD, scope=scope
            )
            cache[key] = str(body["access_token"])
        return cache[key]

    return get


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


def echoed(response: httpx2.Response) -> dict[str, object]:
    message = rpc(response)
    assert "result" in message, message
    result: dict[str, object] = json.loads(message["result"]["content"][0]["text"])
    return result


def refusal(response: httpx2.Response) -> dict[str, object]:
    message = rpc(response)
    assert "error" in message, message
    error: dict[str, object] = message["error"]
    return error


# -- who sees and calls what -------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_alice_sees_and_calls_create_issue(
    gw: Gateway, tracker: IssueTracker, token: Token, http: httpx2.AsyncClient, era: str
) -> None:
    alice = McpClient(http, gw.url("gh"), await token("alice"), era)
    assert set(await alice.tool_names()) == {"create_issue", "comment", "list_issues"}
    response = await alice.call("create_issue", {"repo": "acme/web", "title": f"from {era}"})
    assert echoed(response) == {
        "tool": "create_issue",
        "arguments": {"repo": "acme/web", "title": f"from {era}"},
    }
    assert tracker.calls()[-1]["arguments"] == {"repo": "acme/web", "title": f"from {era}"}

    aggregate = McpClient(http, gw.url(), await token("alice", None), era)
    assert {"gh__create_issue", "gh__comment", "gh__list_issues"} <= set(await aggregate.tool_names())
    assert echoed(await aggregate.call("gh__comment", {"repo": "acme/api"}))["tool"] == "comment"


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("endpoint", ["gh", None])
async def test_bob_does_not_see_create_issue_and_is_refused(
    gw: Gateway, tracker: IssueTracker, token: Token, http: httpx2.AsyncClient, era: str, endpoint: str | None
) -> None:
    bob = McpClient(http, gw.url(endpoint), await token("bob", endpoint), era)
    prefix = "gh__" if endpoint is None else ""
    assert await bob.tool_names() == [f"{prefix}list_issues"]
    before = len(tracker.calls())
    response = await bob.call(f"{prefix}create_issue", {"repo": "acme/web"})
    error = refusal(response)
    assert error["code"] == POLICY_DENIED
    assert "'eng-write'" in str(error["message"]), error  # the rule that would have allowed it
    assert "engineering" not in str(error["message"])  # not who else may
    assert len(tracker.calls()) == before  # nothing reached the upstream
    assert echoed(await bob.call(f"{prefix}list_issues", {}))["tool"] == "list_issues"


# -- step-up -----------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_missing_scope_is_a_403_challenge_naming_all_scopes_needed(
    gw: Gateway, tracker: IssueTracker, token: Token, http: httpx2.AsyncClient, era: str
) -> None:
    alice = McpClient(http, gw.url("gh"), await token("alice", scope="mcp"), era)
    assert "create_issue" in await alice.tool_names()  # listed: a step-up would allow it
    before = len(tracker.calls())
    response = await alice.call("create_issue", {"repo": "acme/web"})
    assert response.status_code == 403, response.text
    params = challenge_params(response.headers["www-authenticate"])
    assert params["error"] == "insufficient_scope"
    assert params["scope"].split() == ["mcp", "github:write"]
    assert params["resource_metadata"] == f"{gw.base}/.well-known/oauth-protected-resource/mcp/gh"
    assert len(tracker.calls()) == before


async def test_python_sdk_client_steps_up_and_succeeds(
    gw: Gateway, tracker: IssueTracker, user_ids: dict[str, str]
) -> None:
    """mcp 2.3.0's OAuth client as the pre-registered client ``claude``: it signs in with the
    scope of the first 401 (``mcp``), gets the 403 on create_issue, signs in again with the union
    of what it had and what the challenge names, and the retried call succeeds."""
    user = HeadlessUser("alice", PASSWORD)
    storage = MemoryTokenStorage()
    storage.client_info = OAuthClientInformationFull(
        client_id="claude",
        redirect_uris=[REDIRECT_URI],
        token_endpoint_auth_method="none",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    url = gw.url("gh")
    async with (
        httpx2.AsyncClient(auth=sdk_auth(url, user, storage=storage), timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        listed = await client.list_tools()
        assert storage.tokens is not None
        assert set((storage.tokens.scope or "").split()) - {"offline_access"} == {"mcp"}
        assert "create_issue" in [t.name for t in listed.tools]
        result = await client.call_tool("create_issue", {"repo": "acme/web", "title": "stepped up"})
    assert not result.is_error, result
    assert tracker.calls()[-1]["arguments"] == {"repo": "acme/web", "title": "stepped up"}
    assert user.sign_ins == 2
    assert set((storage.tokens.scope or "").split()) - {"offline_access"} == {"mcp", "github:write"}


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "repo",
    [
        "evil/x",
        "acme/../evil",  # traversal out of acme/
        "acme//web",
        "ACME/web",  # the rule is case-sensitive
        "\u0430cme/web",  # Cyrillic a
        "\uff41cme/web",  # full-width a (not NFKC)
        "acme/web%2F..%2Fevil",
        "acme/web\n",
    ],
)
async def test_arguments_that_slip_past_the_pattern_are_refused(
    gw: Gateway, tracker: IssueTracker, token: Token, http: httpx2.AsyncClient, repo: str
) -> None:
    alice = McpClient(http, gw.url("gh"), await token("alice"), "modern")
    before = len(tracker.calls())
    error = refusal(await alice.call("create_issue", {"repo": repo}))
    assert error["code"] == POLICY_DENIED, error
    assert len(tracker.calls()) == before
    assert echoed(await alice.call("create_issue", {"repo": "acme/web"}))["arguments"] == {"repo": "acme/web"}


async def test_mcp_name_header_that_disagrees_with_the_body_is_refused_before_policy(
    gw: Gateway, tracker: IssueTracker, token: Token, http: httpx2.AsyncClient
) -> None:
    # bob may call list_issues, not create_issue: a header naming the one while the body calls
    # the other is refused as a mismatch (-32020), whichever of the two policy would look at
    bob = McpClient(http, gw.url("gh"), await token("bob"), "modern")
    before = len(tracker.calls())
    response = await bob.call("create_issue", {"repo": "acme/web"}, header_name="list_issues")
    assert response.status_code == 400
    assert refusal(response)["code"] == -32020
    alice = McpClient(http, gw.url("gh"), await token("alice", scope="mcp"), "modern")
    response = await alice.call("list_issues", {}, header_name="create_issue")
    assert response.status_code == 400  # not the 403 step-up that create_issue would get
    assert refusal(response)["code"] == -32020
    assert len(tracker.calls()) == before


# -- audit -------------------------------------------------------------------------------------


async def test_every_decision_is_an_audit_record_naming_its_rule(
    gw: Gateway, token: Token, http: httpx2.AsyncClient, user_ids: dict[str, str]
) -> None:
    mark = f"audit-{secrets.token_hex(4)}"
    alice = McpClient(http, gw.url("gh"), await token("alice"), "modern")
    bob = McpClient(http, gw.url("gh"), await token("bob"), "modern")
    narrow = McpClient(http, gw.url("gh"), await token("alice", scope="mcp"), "modern")
    assert "result" in rpc(await alice.call("create_issue", {"repo": "acme/web", "title": mark}))
    assert refusal(await alice.call("create_issue", {"repo": "evil/x", "title": mark}))
    assert refusal(await alice.call("create_issue", {"repo": "acme/../x", "title": mark}))
    assert refusal(await bob.call("create_issue", {"repo": "acme/web", "title": mark}))
    assert (await narrow.call("create_issue", {"repo": "acme/web", "title": mark})).status_code == 403
    assert "result" in rpc(await bob.call("list_issues", {}))

    records = [r for r in audit_records(gw, 200) if r.get("name") == "create_issue"][-5:]
    seen = [(r["event"], r["subject"], r["detail"]) for r in records]
    alice_id, bob_id = user_ids["alice"], user_ids["bob"]
    assert [(e, s) for e, s, _ in seen] == [
        (events.CALL_FORWARDED, alice_id),
        (events.CALL_DENIED, alice_id),
        (events.CALL_DENIED, alice_id),
        (events.CALL_DENIED, bob_id),
        (events.CALL_UNAUTHORIZED, alice_id),
    ], seen
    details = [d for _, _, d in seen]
    assert details[0].startswith("policy: eng-write")
    assert details[1].startswith("policy: eng-write")
    assert "does not allow these arguments" in details[1]
    assert details[2].startswith("policy: policy:canonical-form")
    assert details[3].startswith("policy: policy:no-match")
    assert "'eng-write'" in details[3]
    assert details[4].startswith("policy: eng-write")
    listed = [r for r in audit_records(gw, 50) if r.get("name") == "list_issues"][-1]
    assert listed["detail"].startswith("policy: read-issues"), listed
    assert mark not in json.dumps(records)  # arguments are not audited


# -- reload ------------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.2)


async def test_policy_reloads_on_change_and_sighup_and_a_bad_edit_keeps_the_old(
    flow_tmp: Path, tracker: IssueTracker, http: httpx2.AsyncClient
) -> None:
    size = 1000  # every valid version of the file has this size (see the SIGHUP step)
    policy_file = flow_tmp / f"reload-{secrets.token_hex(4)}.yaml"
    policy_file.write_text(rule_file(pad_to=size))
    upstreams = [{"name": "gh", "http": {"url": tracker.url}}]
    with run_gateway(flow_tmp, upstreams, extra=policy_config(policy_file)) as gw:
        await add_users(gw, {"alice": PASSWORD}, groups={"alice": ["engineering"]})
        body = await user_token(
            gw.base,
            client_id="claude",
            resource=gw.url("gh"),
            username="alice",
            password=PASSWORD,
            scope=FULL,
        )
        alice = McpClient(http, gw.url("gh"), str(body["access_token"]), "modern")

        async def allowed(tool: str = "create_issue") -> bool:
            return "result" in rpc(await alice.call(tool, {"repo": "acme/web"}))

        async def denied() -> bool:
            return not await allowed()

        assert await allowed()
        # an edit: only sales may create issues now
        policy_file.write_text(rule_file("sales", pad_to=size))
        await eventually(denied, "the edited policy file in force")
        assert "policy reloaded" in gw.log()

        # a broken edit (line 5: an unknown key): the previous policy stays, the log says where
        policy_file.write_text(rule_file("engineering").replace("require_scopes", "require_scope"))
        where = f"{policy_file}:5: policies[0].require_scope: unknown key"
        await eventually(lambda: asyncio.sleep(0, where in gw.log()), "the refusal in the log")
        assert "refused, the previous policy stays" in gw.log()
        assert await denied()

        # SIGHUP: a change the watcher cannot see (same size, inode and mtime) is read on the signal
        policy_file.write_text(rule_file("sales", pad_to=size))
        await eventually(lambda: asyncio.sleep(0, gw.log().count("policy reloaded") >= 2), "the repair")
        seen = policy_file.stat()
        policy_file.write_text(rule_file("engineering", pad_to=size))
        os.utime(policy_file, ns=(seen.st_atime_ns, seen.st_mtime_ns))
        assert policy_file.stat().st_size == seen.st_size
        await asyncio.sleep(2.5)  # more than one look of the watcher
        assert await denied()
        assert gw.pid is not None
        os.kill(gw.pid, signal.SIGHUP)
        await eventually(allowed, "the policy read on SIGHUP")
        assert "policy reloaded (SIGHUP)" in gw.log()

        # the main file's policies: reloaded too; its other keys need a restart, and the log says so
        config = yaml.safe_load(gw.config_path.read_text())
        config["policies"] = [
            {"id": "no-comments", "upstream": "gh", "tools": ["comment"], "deny": {"groups": ["engineering"]}}
        ]
        config["sessions"] = {"idle_ttl": 1234}
        gw.config_path.write_text(yaml.safe_dump(config))
        await eventually(lambda: denied_with(alice, "comment", "'no-comments'"), "the main file's new rule")
        assert await allowed()
        assert "other configuration changes need a restart" in gw.log()

        audit = [r for r in audit_records(gw, 100) if r["event"].startswith("policy.")]
        assert [r["event"] for r in audit].count(events.POLICY_REJECTED) == 1
        rejected = next(r for r in audit if r["event"] == events.POLICY_REJECTED)
        assert f"{policy_file}:5" in rejected["detail"]
        assert any("(SIGHUP)" in r["detail"] for r in audit if r["event"] == events.POLICY_RELOADED)


async def denied_with(client: McpClient, tool: str, text: str) -> bool:
    message = rpc(await client.call(tool, {"repo": "acme/web"}))
    return "error" in message and text in message["error"]["message"]


# -- the bastion policy commands ---------------------------------------------------------------


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


async def test_policy_test_command(gw: Gateway, user_ids: dict[str, str]) -> None:
    config = ("-c", str(gw.config_path))
    call = ("--client", "claude", "--tool", "gh__create_issue")
    done = bastion("policy", "test", *config, "--user", "alice", *call, "--args", '{"repo":"acme/web"}')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "found in the store" in done.stdout  # groups from the store
    assert "groups: engineering" in done.stdout
    assert "decision: ALLOW (allowed by 'eng-write'" in done.stdout
    done = bastion("policy", "test", *config, "--user", "bob", *call, "--args", '{"repo":"acme/web"}')
    assert done.returncode == 1
    assert "decision: DENY" in done.stdout
    done = bastion(
        "policy",
        "test",
        *config,
        "--user",
        "alice",
        *call,
        "--args",
        '{"repo":"acme/web"}',
        "--scopes",
        "mcp",
    )
    assert done.returncode == 1
    assert "decision: STEP-UP" in done.stdout
    assert "re-authorize with: github:write" in done.stdout
    assert 'error="insufficient_scope", scope="mcp github:write" (at /mcp)' in done.stdout
    alice = user_ids["alice"]  # by user id too
    done = bastion("policy", "test", *config, "--user", alice, *call, "--args", '{"repo":"evil/x"}')
    assert done.returncode == 1
    assert f"user 'alice' found in the store ({alice})" in done.stdout
    assert "does not allow these arguments (repo)" in done.stdout
    done = bastion(
        "policy",
        "test",
        *config,
        "--user",
        "bob",
        "--groups",
        "engineering",
        *call,
        "--args",
        '{"repo":"acme/x"}',
    )
    assert done.returncode == 0, done.stdout  # flags override the store


async def test_policy_lint_command(gw: Gateway, flow_tmp: Path, user_ids: dict[str, str]) -> None:
    done = bastion("policy", "lint", "-c", str(gw.config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 warnings" in done.stdout

    config = yaml.safe_load(gw.config_path.read_text())
    config["policies"] = [
        {"id": "no-gh-for-sales", "upstream": "gh", "deny": {"groups": ["sales"]}},
        {"id": "finance-reads", "upstream": "gh", "tools": ["list_issues"], "allow": {"groups": ["finance"]}},
    ]
    warned = flow_tmp / f"lint-{secrets.token_hex(4)}.yaml"
    warned.write_text(yaml.safe_dump(config))
    done = bastion("policy", "lint", "-c", str(warned))
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "'finance-reads'): allow.groups: no identity provider grant produces group 'finance'" in done.stdout
    )
    assert "may never match" in done.stdout
    assert "'read-issues'" not in done.stdout  # sales is only one of the groups it allows

    broken_rules = flow_tmp / f"broken-{secrets.token_hex(4)}.yaml"
    broken_rules.write_text(
        rule_file().replace("upstream: gh\n    tools: [list", "upstream: nowhere\n    tools: [list")
    )
    config["policy"] = {"files": [str(broken_rules)]}
    broken = flow_tmp / f"lint-{secrets.token_hex(4)}.yaml"
    broken.write_text(yaml.safe_dump(config))
    done = bastion("policy", "lint", "-c", str(broken))
    assert done.returncode == 2
    assert f"{broken_rules}:8: policies[1]: upstream 'nowhere' is not configured" in done.stderr

    show = bastion("policy", "show", "-c", str(gw.config_path))
    assert '@id("eng-write")' in show.stdout
    schema = bastion("policy", "schema", "-c", str(gw.config_path))
    assert "type Args = { repo?: String };" in schema.stdout
