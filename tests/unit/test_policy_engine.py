"""bastion.policy.engine: decisions, step-up, argument constraints, list filtering, the cache.

Real Cedar evaluation (cedarpy) over a policy in the shape of issue #6; each case is one
(principal, MCP message) and the Decision the pipeline acts on.
"""

from __future__ import annotations

from typing import Any

import cedarpy
import orjson
import pytest

from bastion.config import load_config_text
from bastion.core.records import Decision, Era, InboundCall, MessageKind, Principal, request_call
from bastion.policy import evaluate
from bastion.policy.allow_all import AllowAll
from bastion.policy.engine import PLUMBING, CedarPolicy
from bastion.policy.loader import load_policy

CONFIG = """
auth: {scopes: [mcp, "github:write", "github:read", "crm:write", "crm:read", "bank:pay"]}
upstreams:
  - {name: github, http: {url: "http://127.0.0.1:9/mcp"}}
  - {name: bank, http: {url: "http://127.0.0.1:9/mcp"}}
  - {name: crm, http: {url: "http://127.0.0.1:9/mcp"}}
  - {name: docs, http: {url: "http://127.0.0.1:9/mcp"}}
policy:
  upstreams: {bank: deny}
  scope_implies: {"crm:write": ["crm:read"]}
policies:
  - id: eng-write
    upstream: github
    tools: [create_issue, comment]
    require_scopes: ["github:write"]
    allow: {groups: [engineering], clients: [claude, vscode]}
    args: {repo: {match: "acme/*"}}
  - id: read-issues
    upstream: github
    tools: [list_issues]
    allow: {groups: [engineering, sales]}
    visibility: visible
  - id: search-ci
    upstream: github
    tools: [search_code]
    args: {query: {match: "acme/*", case: insensitive}}
  - id: search-cs
    upstream: github
    tools: [search_repos]
    args: {owner: {match: "acme*"}}
  - id: triage
    upstream: github
    prompts: [triage]
    allow: {users: [alice]}
  - id: bank-untrusted
    upstream: bank
    tools: ["*"]
    deny: {clients: [untrusted-agent]}
  - id: bank-ops
    upstream: bank
    tools: [balance, transfer]
    require_scopes: ["bank:pay"]
    allow: {groups: [ops]}
  - id: crm-lookup
    upstream: crm
    tools: [lookup]
    require_scopes: ["crm:read"]
  - id: crm-admin
    upstream: crm
    tools: [merge]
    require_scopes: ["crm:write", "crm:read"]
    allow: {roles: [crm-admin]}
  - id: docs-public
    upstream: docs
    resources: ["file:///public/*"]
  - id: docs-internal
    upstream: docs
    resources: ["file:///internal/*"]
    allow: {groups: [staff]}
"""


def engine(config: str = CONFIG, **kw: Any) -> CedarPolicy:
    return CedarPolicy.from_settings(load_config_text(config, {}), **kw)


@pytest.fixture(scope="module")
def policy() -> CedarPolicy:
    return engine()


def user(
    name: str, *groups: str, client: str = "claude", scopes: tuple[str, ...] = (), roles: tuple[str, ...] = ()
) -> Principal:
    return Principal(
        subject=f"u-{name}",
        client_id=client,
        scopes=frozenset(scopes),
        groups=frozenset(groups),
        roles=frozenset(roles),
        token_id="t",
        authenticated=True,
        username=name,
        email=f"{name}@acme.example",
    )


ALICE = user("alice", "engineering", scopes=("github:write",))
ALICE_LOW = user("alice", "engineering", scopes=("mcp",))
BOB = user("bob", "sales", scopes=("github:write",))
CAROL = user("carol", "ops", scopes=("bank:pay",))
MACHINE = Principal(subject="ci-bot", client_id="ci-bot", scopes=frozenset({"crm:read"}), authenticated=True)


def message(method: str, params: dict[str, Any] | None = None, *, request: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if request:
        out["id"] = 1
    return out


def call(
    endpoint: str | None, method: str, params: dict[str, Any] | None = None, *, era: Era = Era.LEGACY
) -> InboundCall:
    return request_call(endpoint, method, params or {}, era=era)


def tool(endpoint: str | None, name: str, **args: Any) -> InboundCall:
    return call(endpoint, "tools/call", {"name": name, "arguments": args})


# -- calls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "request_", "allowed", "rule", "reason"),
    [
        (ALICE, tool("github", "create_issue", repo="acme/web"), True, "eng-write", "allowed by 'eng-write'"),
        (
            BOB,
            tool("github", "create_issue", repo="acme/web"),
            False,
            "policy:no-match",
            "rules for it: 'eng-write'",
        ),
        (  # the right group through a client the rule does not name
            user("alice", "engineering", client="cursor", scopes=("github:write",)),
            tool("github", "create_issue", repo="acme/web"),
            False,
            "policy:no-match",
            "no policy rule allows this for you",
        ),
        (
            ALICE,
            tool("github", "delete_repo"),
            True,
            "default:allow",
            "allowed by default",
        ),  # no rule names it
        (BOB, tool("github", "list_issues"), True, "read-issues", ""),
        (user("dan", "marketing"), tool("github", "list_issues"), False, "policy:no-match", ""),
        # deny by client, whatever allows it
        (
            user("carol", "ops", client="untrusted-agent", scopes=("bank:pay",)),
            tool("bank", "balance"),
            False,
            "bank-untrusted",
            "Denied by policy rule 'bank-untrusted'",
        ),
        (CAROL, tool("bank", "balance"), True, "bank-ops", ""),
        # default deny for the upstream: what no rule allows is refused
        (
            CAROL,
            tool("bank", "close_account"),
            False,
            "policy:default-deny",
            "default deny for upstream 'bank'",
        ),
        (ALICE, tool("bank", "balance"), False, "policy:no-match", "'bank-ops'"),
        # scope hierarchy: crm:write implies crm:read
        (user("erin", scopes=("crm:write",)), tool("crm", "lookup"), True, "crm-lookup", ""),
        (
            user("erin", scopes=("crm:write",), roles=("crm-admin",)),
            tool("crm", "merge"),
            True,
            "crm-admin",
            "",
        ),
        # a machine client (client credentials): rules without a who apply, user rules do not
        (MACHINE, tool("crm", "lookup"), True, "crm-lookup", ""),
        (MACHINE, call("github", "prompts/get", {"name": "triage"}), False, "policy:no-match", ""),
        # prompts and users by username
        (ALICE, call("github", "prompts/get", {"name": "triage"}), True, "triage", ""),
        (BOB, call("github", "prompts/get", {"name": "triage"}), False, "policy:no-match", ""),
        (
            ALICE,
            call("github", "completion/complete", {"ref": {"type": "ref/prompt", "name": "triage"}}),
            True,
            "triage",
            "",
        ),
        (
            BOB,
            call("github", "completion/complete", {"ref": {"type": "ref/prompt", "name": "triage"}}),
            False,
            None,
            "",
        ),
        # resources by URI pattern; URIs no rule matches keep the default
        (BOB, call("docs", "resources/read", {"uri": "file:///public/a.md"}), True, "docs-public", ""),
        (
            BOB,
            call("docs", "resources/read", {"uri": "file:///internal/plan.md"}),
            False,
            "policy:no-match",
            "",
        ),
        (
            user("sam", "staff"),
            call("docs", "resources/read", {"uri": "file:///internal/plan.md"}),
            True,
            None,
            "",
        ),
        (BOB, call("docs", "resources/subscribe", {"uri": "file:///internal/plan.md"}), False, None, ""),
        (BOB, call("docs", "resources/read", {"uri": "file:///other/x"}), True, "default:allow", ""),
        # the aggregate endpoint: <upstream>__<tool>, <upstream>+<uri>
        (ALICE, tool(None, "github__create_issue", repo="acme/web"), True, "eng-write", ""),
        (BOB, tool(None, "github__create_issue", repo="acme/web"), False, "policy:no-match", ""),
        (BOB, call(None, "resources/read", {"uri": "docs+file:///internal/x"}), False, "policy:no-match", ""),
        (ALICE, tool(None, "create_issue"), False, "policy:unroutable", "does not name an upstream"),
        (ALICE, tool(None, "gitlab__create_issue"), False, "policy:unroutable", "unknown upstream 'gitlab'"),
    ],
)
def test_decisions(
    policy: CedarPolicy, who: Principal, request_: InboundCall, allowed: bool, rule: str | None, reason: str
) -> None:
    decision = policy.decide(who, request_)
    assert decision.allowed is allowed, decision
    assert not decision.step_up
    if rule is not None:
        assert decision.rule == rule
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("who", "request_", "scopes"),
    [  # every scope the operation needs, in one challenge
        (ALICE_LOW, tool("github", "create_issue", repo="acme/web"), ("github:write",)),
        (user("carol", "ops"), tool("bank", "transfer"), ("bank:pay",)),
        (user("erin"), tool("crm", "lookup"), ("crm:read",)),
        (
            user("erin", scopes=("crm:read",), roles=("crm-admin",)),
            tool("crm", "merge"),
            ("crm:read", "crm:write"),
        ),
        (ALICE_LOW, tool(None, "github__comment", repo="acme/api"), ("github:write",)),
    ],
)
def test_step_up_names_the_full_scope_set(
    policy: CedarPolicy, who: Principal, request_: InboundCall, scopes: tuple[str, ...]
) -> None:
    decision = policy.decide(who, request_)
    assert decision.allowed is False
    assert decision.step_up == scopes
    assert "needs scopes" in decision.reason


def test_no_step_up_when_more_scopes_would_not_help(policy: CedarPolicy) -> None:
    sales_low = user("bob", "sales", scopes=("mcp",))
    assert policy.decide(sales_low, tool("github", "create_issue", repo="acme/web")).step_up == ()
    assert policy.decide(ALICE_LOW, tool("github", "create_issue", repo="evil/x")).step_up == ()


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "allowed", "reason"),
    [
        (tool("github", "create_issue", repo="acme/web"), True, ""),
        (tool("github", "create_issue", repo="evil/x"), False, "does not allow these arguments (repo)"),
        (
            tool("github", "create_issue"),
            False,
            "no policy rule allows this",
        ),  # a constrained argument is required
        (
            tool("github", "create_issue", repo="acme/../evil"),
            False,
            "argument 'repo' is not in canonical form",
        ),
        (tool("github", "create_issue", repo="acme//web"), False, "not in canonical form"),
        (tool("github", "create_issue", repo="\uff41cme/web"), False, "not in canonical form (Unicode NFKC)"),
        (
            tool("github", "create_issue", repo="\u0430cme/web"),
            False,
            "does not allow these arguments",
        ),  # Cyrillic
        (
            tool("github", "create_issue", repo="ACME/web"),
            False,
            "does not allow these arguments",
        ),  # case sensitive
        (tool("github", "create_issue", repo="acme/web\x00"), False, "control characters"),
        (tool("github", "create_issue", repo=["acme/web"]), False, "argument 'repo' must be a string"),
        (tool("github", "create_issue", repo=7), False, "must be a string"),
        (tool("github", "create_issue", repo="acme/web", title={"any": "shape"}), True, ""),  # unconstrained
        (tool("github", "search_code", query="ACME/Web"), True, ""),  # case insensitive
        (tool("github", "search_code", query="\u0410CME/web"), False, "does not allow these arguments"),
        (tool("github", "search_repos", owner="ACME"), False, "does not allow these arguments"),
        (tool("github", "search_repos", owner="acme-labs"), True, ""),
        (tool("github", "list_issues", repo="acme/../x"), True, ""),  # no rule here constrains repo
    ],
)
def test_arguments(policy: CedarPolicy, request_: InboundCall, allowed: bool, reason: str) -> None:
    decision = policy.decide(ALICE, request_)
    assert decision.allowed is allowed, decision
    assert reason in decision.reason


# -- plumbing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        call("bank", "initialize", {"protocolVersion": "2025-06-18"}),
        call("bank", "ping"),
        call("bank", "server/discover", era=Era.MODERN),
        call("bank", "logging/setLevel", {"level": "info"}),
        call(None, "completion/complete", {"ref": {"type": "ref/resource", "uri": "docs+x"}}),
    ],
)
def test_protocol_plumbing_is_always_allowed(policy: CedarPolicy, request_: InboundCall) -> None:
    nobody = user("nobody", client="untrusted-agent")
    assert policy.decide(nobody, request_) is PLUMBING


def test_notifications_responses_and_streams_are_not_policed(policy: CedarPolicy) -> None:
    base = call("bank", "notifications/initialized")
    for variant in (
        base._replace(kind=MessageKind.NOTIFICATION),
        base._replace(kind=MessageKind.RESPONSE, method=None),
        base._replace(http_method="GET", kind=None, method=None),
        base._replace(http_method="DELETE", kind=None, method=None),
    ):
        assert policy.decide(ALICE, variant).allowed


def test_other_methods_need_the_upstream(policy: CedarPolicy) -> None:
    whole = engine(CONFIG + "  - {id: bank-staff, upstream: bank, allow: {groups: [ops]}}\n")
    complete = call("bank", "completion/complete", {"ref": {"type": "ref/resource", "uri": "x"}})
    assert whole.decide(CAROL, complete).allowed
    assert whole.decide(BOB, complete).rule == "policy:no-match"
    assert policy.decide(BOB, complete).allowed  # no whole-upstream rule: lists and the like stay open


# -- lists ---------------------------------------------------------------------------------------

GITHUB_TOOLS = ["create_issue", "comment", "list_issues", "search_code", "delete_repo"]


def names(decision: Decision, upstream: str, kind: str, items: list[str]) -> list[str]:
    assert decision.allowed
    assert decision.lists is not None
    field = {"tools": "name", "prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}[kind]
    shown = decision.lists.visible(upstream, kind, [{field: n, "extra": 1} for n in items])
    assert all(item["extra"] == 1 for item in shown)  # items pass through unchanged
    return [item[field] for item in shown]


@pytest.mark.parametrize(
    ("who", "visible"),
    [
        (ALICE, GITHUB_TOOLS),
        (ALICE_LOW, GITHUB_TOOLS),  # create_issue/comment need a step-up: they stay, so the client can ask
        (BOB, ["list_issues", "search_code", "delete_repo"]),
        (user("dan", "marketing"), ["list_issues", "search_code", "delete_repo"]),  # list_issues: visible
        (MACHINE, ["list_issues", "search_code", "delete_repo"]),
    ],
)
def test_tools_list_is_filtered_per_principal(
    policy: CedarPolicy, who: Principal, visible: list[str]
) -> None:
    assert names(policy.decide(who, call("github", "tools/list")), "github", "tools", GITHUB_TOOLS) == visible


def test_lists_on_default_deny_and_denying_rules(policy: CedarPolicy) -> None:
    bank = ["balance", "transfer", "close_account"]
    assert names(policy.decide(CAROL, call("bank", "tools/list")), "bank", "tools", bank) == [
        "balance",
        "transfer",
    ]
    assert names(policy.decide(BOB, call("bank", "tools/list")), "bank", "tools", bank) == []
    untrusted = user("carol", "ops", client="untrusted-agent", scopes=("bank:pay",))
    assert names(policy.decide(untrusted, call("bank", "tools/list")), "bank", "tools", bank) == []
    visible = engine(
        CONFIG.replace(
            "deny: {clients: [untrusted-agent]}",
            "deny: {clients: [untrusted-agent]}\n    visibility: visible",
        )
    )
    assert names(visible.decide(untrusted, call("bank", "tools/list")), "bank", "tools", bank) == bank


def test_resource_and_prompt_lists(policy: CedarPolicy) -> None:
    uris = ["file:///public/a", "file:///internal/b", "file:///other/c"]
    listing = policy.decide(BOB, call("docs", "resources/list"))
    assert names(listing, "docs", "resources", uris) == ["file:///public/a", "file:///other/c"]
    staff = policy.decide(user("sam", "staff"), call("docs", "resources/list"))
    assert names(staff, "docs", "resources", uris) == uris
    templates = ["file:///internal/{name}", "file:///public/{name}"]
    assert names(listing, "docs", "resourceTemplates", templates) == ["file:///public/{name}"]
    prompts = policy.decide(BOB, call("github", "prompts/list"))
    assert names(prompts, "github", "prompts", ["triage", "summarize"]) == ["summarize"]


def test_aggregate_lists_are_filtered_per_upstream(policy: CedarPolicy) -> None:
    decision = policy.decide(BOB, call(None, "tools/list"))
    assert names(decision, "github", "tools", GITHUB_TOOLS) == ["list_issues", "search_code", "delete_repo"]
    assert names(decision, "bank", "tools", ["balance"]) == []
    assert names(decision, "crm", "tools", ["lookup", "other"]) == ["lookup", "other"]
    whole = engine(CONFIG + "  - {id: crm-deny, upstream: crm, deny: {groups: [sales]}}\n")
    assert names(whole.decide(BOB, call(None, "tools/list")), "crm", "tools", ["lookup", "other"]) == []
    refused = whole.decide(BOB, call("crm", "tools/list"))
    assert (refused.allowed, refused.rule) == (False, "crm-deny")


def test_list_items_without_a_name_are_dropped(policy: CedarPolicy) -> None:
    listing = policy.decide(ALICE, call("github", "tools/list")).lists
    assert listing is not None
    assert listing.visible("github", "tools", [{"name": 3}, {"title": "x"}, {"name": "delete_repo"}]) == [
        {"name": "delete_repo"}
    ]
    assert listing.visible("github", "unknown-kind", [{"name": "x"}]) == []


# -- the cache -----------------------------------------------------------------------------------


def test_cache_returns_the_same_decision_and_a_new_engine_starts_empty() -> None:
    first = engine()
    request_ = tool("github", "create_issue", repo="acme/web")
    decision = first.decide(ALICE, request_)
    assert first.decide(ALICE, request_) is decision  # a hit: the very same object
    assert first.decide(ALICE, tool("github", "create_issue", repo="acme/api")) is not decision  # other args
    assert first.decide(BOB, request_).allowed is False  # other principal, other key
    # a reload builds a new engine: the old decision is not reused
    reloaded = engine(
        CONFIG.replace(
            "allow: {groups: [engineering], clients: [claude, vscode]}", "allow: {groups: [sales]}"
        )
    )
    assert reloaded.decide(ALICE, request_).allowed is False
    assert first.decide(ALICE, request_) is decision  # the old engine is unchanged (immutable)


def test_cache_off_and_time_dependent_policies_are_not_cached(tmp_path: Any) -> None:
    off = engine(CONFIG.replace("policy:\n", "policy:\n  cache_size: 0\n"))
    request_ = tool("github", "create_issue", repo="acme/web")
    assert off.decide(ALICE, request_) is not off.decide(ALICE, request_)
    (tmp_path / "hours.cedar").write_text(
        'forbid (principal, action, resource in Bastion::Upstream::"crm") when { context.time < 0 };\n'
    )
    timed = engine(CONFIG.replace("policy:\n", "policy:\n  files: [hours.cedar]\n"), base_dir=tmp_path)
    lookup = tool("crm", "lookup")
    erin = user("erin", scopes=("crm:read",))
    assert timed.decide(erin, lookup).allowed
    assert timed.decide(erin, lookup) is not timed.decide(erin, lookup)
    assert timed.decide(ALICE, request_) is timed.decide(ALICE, request_)  # other slices still cached


# -- raw Cedar, machines, explain -------------------------------------------------------------------


def test_raw_cedar_policies_decide_with_the_yaml_rules(tmp_path: Any) -> None:
    (tmp_path / "extra.cedar").write_text(
        "// modern clients only on the bank\n"
        '@id("bank-modern")\n'
        'forbid (principal, action, resource in Bastion::Upstream::"bank")\n'
        'when { context.era == "legacy" };\n'
        'permit (principal, action == Bastion::Action::"call_tool",\n'
        '        resource == Bastion::Tool::"bank/rates");\n'
    )
    raw = engine(CONFIG.replace("policy:\n", "policy:\n  files: [extra.cedar]\n"), base_dir=tmp_path)
    legacy = raw.decide(CAROL, tool("bank", "balance"))
    assert (legacy.allowed, legacy.rule) == (False, "bank-modern")
    assert legacy.reason == "Denied by policy rule 'bank-modern'"  # never a server path
    assert "extra.cedar:2" in raw.explain(CAROL, tool("bank", "balance"))  # the operator sees where
    assert raw.decide(CAROL, call("bank", "tools/call", {"name": "balance"}, era=Era.MODERN)).allowed
    rates = raw.decide(BOB, call("bank", "tools/call", {"name": "rates"}, era=Era.MODERN))
    assert (rates.allowed, rates.rule) == (True, "extra.cedar:5")  # default id: file and line


def test_explain_says_which_rule_and_why(policy: CedarPolicy) -> None:
    text = policy.explain(ALICE_LOW, tool(None, "github__create_issue", repo="acme/web"))
    assert 'action: call_tool on Bastion::Tool::"github/create_issue"' in text
    assert "permit 'eng-write' (policies[0])" in text
    assert "arguments checked: repo='acme/web'" in text
    assert "cedar: Deny (no policy matched)" in text
    assert "decision: STEP-UP" in text
    assert "github:write" in text
    assert "decision: DENY" in policy.explain(ALICE, tool("github", "create_issue", repo="acme/../x"))
    assert "protocol message" in policy.explain(ALICE, call("github", "ping"))


def test_load_policy_is_allow_all_without_policies() -> None:
    bare = load_config_text("upstreams: [{name: a, http: {url: 'http://127.0.0.1:9/mcp'}}]\n", {})
    assert isinstance(load_policy(bare), AllowAll)
    deny = load_config_text(
        "upstreams: [{name: a, http: {url: 'http://127.0.0.1:9/mcp'}}]\npolicy: {default: deny}\n", {}
    )
    strict = load_policy(deny)
    assert isinstance(strict, CedarPolicy)
    refused = strict.decide(ALICE, tool("a", "anything"))
    assert (refused.allowed, refused.rule) == (False, "policy:default-deny")
    listing = strict.decide(ALICE, call("a", "tools/list"))
    assert names(listing, "a", "tools", ["x"]) == []


def test_direct_and_public_cedarpy_calls_agree(policy: CedarPolicy) -> None:
    """The engine calls cedarpy's extension directly (the public wrapper costs ~25 µs); a cedarpy
    upgrade that changes it must fail here, not silently."""
    slc = policy.index.slice("call_tool", "github", "create_issue")
    assert slc is not None
    policies = slc.calls.policies
    assert policies is not None
    subject = policy.evaluator.subject(ALICE, "legacy")
    for repo in ("acme/web", "evil/x", "acme/../x"):
        context = {"scopes": ["github:write"], "client": "claude", "era": "legacy", "args": {"repo": repo}}
        items = [evaluate.item_entity("Tool", "github", "create_issue")]
        entities = subject.entities.with_added_json_str(orjson.dumps(items).decode())
        request_ = {
            "principal": subject.uid,
            "action": {"type": "Bastion::Action", "id": "call_tool"},
            "resource": items[0]["uid"],
            "context": orjson.dumps(context).decode(),
        }
        direct = evaluate._direct_batch([request_], policies, entities)
        public = evaluate._public_batch([request_], policies, entities)
        assert direct == public
    assert evaluate.authorize_batch is evaluate._direct_batch
    assert cedarpy.is_authorized_batch  # the public API the fallback uses


def test_checked_arguments_make_the_forwarded_body_the_checked_one(policy: CedarPolicy) -> None:
    """A body with duplicate keys decodes to the last value; an upstream may read the first. When
    arguments were checked, the pipeline forwards the body as Bastion decoded it."""
    checked = policy.decide(ALICE, tool("github", "create_issue", repo="acme/web"))
    assert checked.allowed
    assert checked.canonical_body
    unconstrained = policy.decide(ALICE, tool("github", "list_issues"))
    assert not unconstrained.canonical_body
