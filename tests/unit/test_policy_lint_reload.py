"""``bastion policy lint``'s analysis (names nobody has, shadowed rules) and the policy reloader
(atomic swap, a bad edit keeps the old engine, the main file's other keys need a restart), with
real configuration files in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from bastion.config import load_config_text
from bastion.config.policy import PolicyRule, Who
from bastion.core.records import Era, InboundCall, MessageKind, Principal
from bastion.policy.allow_all import AllowAll
from bastion.policy.engine import CedarPolicy
from bastion.policy.lint import Known, covers_target, covers_who, lint
from bastion.policy.loader import load_policy
from bastion.policy.reload import PolicyHolder, PolicyReloader, ReloadOutcome
from bastion.policy.source import YamlRule

NOBODY = Known(frozenset(), frozenset(), frozenset(), frozenset())
ALICE = Principal("u1", client_id="claude", groups=frozenset({"eng"}), authenticated=True, username="alice")


def rule(**fields: object) -> PolicyRule:
    return PolicyRule.model_validate({"upstream": "gh", **fields})


def located(*rules: PolicyRule) -> list[YamlRule]:
    return [YamlRule(r, r.id or f"policies[{i}]", f"policies[{i}]") for i, r in enumerate(rules)]


def call(tool: str) -> InboundCall:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    return InboundCall(
        "gh",
        "POST",
        Era.LEGACY,
        MessageKind.REQUEST,
        "tools/call",
        1,
        tool,
        None,
        None,
        "",
        b"",
        message,
        "t",
    )


# -- lint ---------------------------------------------------------------------------------------


def test_names_nobody_has_may_never_match() -> None:
    rules = located(
        rule(tools=["a"], allow={"groups": ["eng", "finance"], "clients": ["claude", "https://c.example/m"]}),
        rule(tools=["b"], deny={"users": ["carol"], "roles": ["admin"]}),
    )
    known = Known(frozenset({"eng"}), frozenset(), frozenset({"alice"}), frozenset({"claude"}))
    messages = [str(f) for f in lint(rules, known)]
    assert messages == [
        "policies[0]: allow.groups: no identity provider grant produces group 'finance' and no user in the "
        "store has it: may never match",
        "policies[1]: deny.users: no user 'carol' in the store (yet): may never match",
        "policies[1]: deny.roles: no user in the store has role 'admin' and no identity provider "
        "reads a roles claim: may never match",
    ]
    everyone = Known(frozenset(), frozenset({"eng", "finance"}), frozenset({"carol"}), frozenset({"claude"}))
    assert len(lint(rules[:1], everyone)) == 0
    admins = Known(
        frozenset(), frozenset(), frozenset({"carol"}), frozenset({"claude"}), roles=frozenset({"admin"})
    )
    assert len(lint(rules[1:2], admins)) == 0  # a stored user holds the role
    idp = Known(frozenset(), frozenset(), frozenset({"carol"}), frozenset({"claude"}), idp_roles=True)
    assert len(lint(rules[1:2], idp)) == 0  # an identity provider may bring it at sign-in


@pytest.mark.parametrize(
    ("broad", "narrow", "covered"),
    [
        ({}, {"tools": ["a"]}, True),  # the whole upstream
        ({"upstream": "*"}, {"prompts": ["p"]}, True),
        ({"tools": ["*"]}, {"tools": ["a", "b"]}, True),
        ({"tools": ["a", "b"]}, {"tools": ["a"]}, True),
        ({"tools": ["a"]}, {"tools": ["a", "b"]}, False),
        ({"tools": ["a"]}, {"tools": ["*"]}, False),
        ({"tools": ["*"]}, {"tools": ["a"], "prompts": ["p"]}, False),
        ({"tools": ["*"]}, {}, False),
        ({"upstream": "other"}, {"tools": ["a"]}, False),
    ],
)
def test_covers_target(broad: dict[str, object], narrow: dict[str, object], covered: bool) -> None:
    assert covers_target(rule(**broad), rule(**narrow)) is covered


@pytest.mark.parametrize(
    ("deny", "who", "covered"),
    [
        ({"clients": ["bad"]}, {"clients": ["bad"]}, True),
        ({"clients": ["bad"]}, {"groups": ["eng"], "clients": ["bad"]}, True),
        ({"clients": ["bad"]}, {"groups": ["eng"]}, False),  # eng through other clients
        ({"groups": ["eng", "ops"]}, {"groups": ["eng"]}, True),
        ({"groups": ["eng"]}, {"groups": ["eng"], "users": ["bob"]}, False),
        ({"groups": ["eng"]}, {"groups": ["eng"], "clients": ["claude"]}, True),
        ({"groups": ["eng"]}, {"clients": ["claude"]}, False),
        ({"groups": ["eng"]}, None, False),
    ],
)
def test_covers_who(deny: dict[str, list[str]], who: dict[str, list[str]] | None, covered: bool) -> None:
    assert covers_who(Who.model_validate(deny), Who.model_validate(who) if who else None) is covered


def test_shadowed_rules() -> None:
    rules = located(
        rule(id="write", tools=["create_issue"], allow={"groups": ["eng"], "clients": ["claude"]}),
        rule(id="no-bad", tools=["*"], deny={"clients": ["bad"]}),
        rule(id="bad-write", tools=["create_issue"], allow={"groups": ["eng"], "clients": ["bad"]}),
        rule(id="bad-again", tools=["comment"], deny={"clients": ["bad"]}),
        rule(id="no-eng", deny={"groups": ["eng"]}, tools=["comment"], args={"repo": {"match": "x/*"}}),
        rule(id="eng-comment", tools=["comment"], allow={"groups": ["eng"]}),
    )
    known = Known(frozenset({"eng"}), frozenset(), frozenset(), frozenset({"claude", "bad"}))
    assert [str(f) for f in lint(rules, known)] == [
        "policies[2] ('bad-write'): can never allow anything: deny rule 'no-bad' (policies[1]) refuses "
        "everyone it names, on the same or a broader target",
        "policies[3] ('bad-again'): adds nothing: deny rule 'no-bad' (policies[1]) already refuses "
        "everything it refuses",
    ]  # a deny with args is not unconditional: eng-comment still allows other repos


# -- reload -------------------------------------------------------------------------------------

BASE = """
auth: {{enabled: false}}
upstreams: [{{name: gh, http: {{url: "http://127.0.0.1:1/mcp"}}}}]
policy: {{files: [{file}]}}
{extra}
"""
RULES = """policies:
  - id: write
    upstream: gh
    tools: [create_issue]
    allow: {{groups: [{group}]}}
"""


def setup(tmp_path: Path, *, group: str = "eng", extra: str = "") -> tuple[Path, Path, PolicyReloader]:
    rules, config = tmp_path / "rules.yaml", tmp_path / "bastion.yaml"
    rules.write_text(RULES.format(group=group))
    config.write_text(BASE.format(file=rules, extra=extra))
    settings = load_config_text(config.read_text(), {}, str(config))
    outcomes: list[ReloadOutcome] = []
    reloader = PolicyReloader(
        PolicyHolder(load_policy(settings)), settings, config_path=config, env={}, notify=outcomes.append
    )
    return rules, config, reloader


def bump(path: Path, text: str) -> None:
    path.write_text(text)
    mtime = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(mtime, mtime))  # a change the watcher sees whatever the clock resolution


def test_holder_delegates_to_the_engine_it_holds() -> None:
    holder = PolicyHolder(AllowAll())
    assert holder.decide(ALICE, call("create_issue")).allowed
    assert holder.decide(ALICE, call("create_issue")).rule is None


def test_reload_swaps_the_engine_and_watches_files(tmp_path: Path) -> None:
    rules, config, reloader = setup(tmp_path)
    first = reloader.holder.engine
    assert isinstance(first, CedarPolicy)
    assert reloader.holder.decide(ALICE, call("create_issue")).allowed
    assert reloader.watched() == [config, rules]
    assert reloader.changed() is None
    bump(rules, RULES.format(group="sales"))
    assert reloader.changed() == rules
    outcome = reloader.reload(f"{rules} changed")
    assert outcome.accepted, outcome
    assert outcome.detail == "1 rule (1 Cedar policy)"
    assert (
        "only policies/policy are reloaded; other configuration changes need a restart" in outcome.message()
    )
    assert reloader.holder.engine is not first
    assert not reloader.holder.decide(ALICE, call("create_issue")).allowed
    assert reloader.changed() is None


def test_a_bad_edit_keeps_the_old_engine_and_says_where(tmp_path: Path) -> None:
    rules, _, reloader = setup(tmp_path)
    before = reloader.holder.engine
    bump(rules, RULES.format(group="eng").replace("tools:", "tool:"))
    outcome = reloader.reload("edit")
    assert not outcome.accepted
    assert f"{rules}:4: policies[0].tool: unknown key" in outcome.detail
    assert outcome.message().startswith("policy reload (edit) refused, the previous policy stays: ")
    assert reloader.holder.engine is before
    assert reloader.changed() is None  # not retried until the next change
    rules.unlink()
    assert reloader.changed() == rules
    assert "no such policy file" in reloader.reload("gone").detail
    assert reloader.holder.engine is before


def test_the_main_file_policies_reload_and_other_changes_need_a_restart(tmp_path: Path) -> None:
    _, config, reloader = setup(tmp_path)
    text = config.read_text()
    deny = "policies: [{id: no-eng, upstream: gh, tools: [create_issue], deny: {groups: [eng]}}]"
    bump(config, text + deny + "\n")
    outcome = reloader.reload("edit")
    assert outcome.accepted
    assert not outcome.restart_needed
    decision = reloader.holder.decide(ALICE, call("create_issue"))
    assert not decision.allowed
    assert decision.rule == "no-eng"

    bump(config, text + "sessions: {idle_ttl: 60}\n")
    outcome = reloader.reload("edit")
    assert outcome.accepted
    assert outcome.restart_needed
    assert "also changed outside policies/policy: other configuration changes need a restart" in (
        outcome.message()
    )
    assert reloader.holder.decide(ALICE, call("create_issue")).allowed

    # a rule about an upstream the running gateway does not have is refused, even when the
    # edited file adds that upstream too (upstreams need a restart)
    bump(
        config,
        text.replace("upstreams: [", 'upstreams: [{name: new, http: {url: "http://127.0.0.1:1/m"}}, ')
        + "policies: [{upstream: new, tools: [x], allow: {groups: [eng]}}]\n",
    )
    outcome = reloader.reload("edit")
    assert not outcome.accepted
    assert "policies[0]: upstream 'new' is not configured" in outcome.detail


def test_no_policy_at_first_then_one(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    config = tmp_path / "bastion.yaml"
    config.write_text(BASE.format(file="[]", extra="").replace("policy: {files: [[]]}", ""))
    settings = load_config_text(config.read_text(), {}, str(config))
    reloader = PolicyReloader(PolicyHolder(load_policy(settings)), settings, config_path=config, env={})
    assert isinstance(reloader.holder.engine, AllowAll)
    assert reloader.watched() == [config]
    rules.write_text(RULES.format(group="sales"))
    bump(config, BASE.format(file=rules, extra=""))
    outcome = reloader.reload("edit")
    assert outcome.accepted
    assert isinstance(reloader.holder.engine, CedarPolicy)
    assert reloader.watched() == [config, rules]
    assert reloader.changed() is None


async def test_watch_reloads_a_changed_file_and_reports_each_outcome(tmp_path: Path) -> None:
    rules, config, _ = setup(tmp_path)
    settings = load_config_text(config.read_text(), {}, str(config))
    outcomes: list[ReloadOutcome] = []
    reloader = PolicyReloader(
        PolicyHolder(load_policy(settings)), settings, config_path=config, env={}, notify=outcomes.append
    )
    task = asyncio.ensure_future(reloader.watch(interval=0.02))
    try:
        bump(rules, RULES.format(group="sales"))
        async with asyncio.timeout(5):
            while not outcomes:
                await asyncio.sleep(0.01)
        assert outcomes[0].accepted
        assert outcomes[0].trigger == f"{rules} changed"
        assert not reloader.holder.decide(ALICE, call("create_issue")).allowed
        bump(rules, "policies: [")
        async with asyncio.timeout(5):
            while len(outcomes) < 2:
                await asyncio.sleep(0.01)
        assert not outcomes[1].accepted
        assert f"{rules}:1: not valid YAML" in outcomes[1].detail
        await asyncio.sleep(0.3)
        assert len(outcomes) == 2  # a refused edit is reported once
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
