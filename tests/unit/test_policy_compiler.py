"""bastion.policy.source + compiler + schema: YAML rules → Cedar, the generated schema, and
validation errors that name the file and line (issue #6, "Policy")."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import load_config_text
from bastion.config.model import Settings
from bastion.core.errors import ConfigError
from bastion.policy.compiler import CompiledPolicy, cedar_text, compile_sources
from bastion.policy.engine import CedarPolicy
from bastion.policy.source import load_sources

BASE = """
auth: {scopes: [mcp, "github:write", "github:read"]}
upstreams:
  - {name: github, http: {url: "http://127.0.0.1:9/mcp"}}
  - {name: bank, http: {url: "http://127.0.0.1:9/mcp"}}
"""

ISSUE_EXAMPLE = (
    BASE
    + """
policies:
  - upstream: github
    tools: [create_issue, comment]
    require_scopes: ["github:write"]
    allow: {groups: [engineering], clients: [claude, vscode]}
    args: {repo: {match: "acme/*"}}
  - upstream: bank
    tools: ["*"]
    deny: {clients: [untrusted-agent]}
"""
)


def settings(text: str) -> Settings:
    return load_config_text(text, {})


def compiled(text: str, files: dict[str, str] | None = None, base: Path | None = None) -> CompiledPolicy:
    if files:
        assert base is not None
        for name, body in files.items():
            (base / name).write_text(body, encoding="utf-8")
    s = settings(text)
    return compile_sources(load_sources(s, base_dir=base), [u.name for u in s.upstreams])


def test_issue_example_compiles_to_one_policy_per_rule() -> None:
    policy = compiled(ISSUE_EXAMPLE)
    assert [e.rule_id for e in policy.entries] == ["policies[0]", "policies[1]"]
    assert cedar_text(policy) == (
        '@id("policies[0]")\n'
        "permit (\n"
        "  principal,\n"
        '  action in [Bastion::Action::"call_tool"],\n'
        '  resource is Bastion::Tool in Bastion::Upstream::"github"\n'
        ") when {\n"
        '  [Bastion::Tool::"github/comment", Bastion::Tool::"github/create_issue"].contains(resource)\n'
        '  && (principal is Bastion::User && (principal in [Bastion::Group::"engineering"]))\n'
        '  && ["claude", "vscode"].contains(context.client)\n'
        '  && context.scopes.containsAll(["github:write"])\n'
        '  && (context.args has repo && context.args.repo like "acme/*")\n'
        "};\n"
        "\n"
        '@id("policies[1]")\n'
        "forbid (\n"
        "  principal,\n"
        '  action in [Bastion::Action::"call_tool"],\n'
        '  resource is Bastion::Tool in Bastion::Upstream::"bank"\n'
        ") when {\n"
        '  ["untrusted-agent"].contains(context.client)\n'
        "};\n"
    )
    first, second = policy.entries
    assert (first.effect, first.upstream, first.names, first.governing) == (
        "permit",
        "github",
        frozenset({"create_issue", "comment"}),
        True,
    )
    assert first.require_scopes == ("github:write",)
    assert first.context == frozenset({"client", "scopes", "args"})
    # while a list is filtered the arguments are unknown: the allowing rule without its constraint
    listing = first.for_listing()
    assert listing is not None
    assert "context.args" not in listing.text
    assert listing.context == frozenset({"client", "scopes"})
    assert second.for_listing() is second
    assert (second.effect, second.names, second.governing) == ("forbid", None, False)
    assert ("Tool", "github", "create_issue") in policy.named


@pytest.mark.parametrize(
    ("rule", "fragments"),
    [
        (  # users match usernames, user ids and (with an @) e-mail addresses
            "{upstream: github, tools: [x], allow: {users: [alice, bob@acme.example]}}",
            [
                '[Bastion::User::"alice", Bastion::User::"bob@acme.example"].contains(principal)',
                '["alice", "bob@acme.example"].contains(principal.username)',
                '(principal has email && ["bob@acme.example"].contains(principal.email))',
            ],
        ),
        (
            "{tools: [x], allow: {roles: [admin]}}",
            ['principal.roles.containsAny(["admin"])', "resource is Bastion::Tool\n"],
        ),
        (  # a tool name on every upstream
            "{tools: [search], allow: {groups: [g]}}",
            ['[Bastion::Tool::"bank/search", Bastion::Tool::"github/search"].contains(resource)'],
        ),
        (  # the whole upstream: every action on it, lists included
            "{upstream: bank, allow: {groups: [ops]}}",
            ['  action,\n  resource in Bastion::Upstream::"bank"\n)'],
        ),
        (  # no who: everyone (with the scope)
            "{upstream: github, prompts: [triage], require_scopes: ['github:read']}",
            [
                'action in [Bastion::Action::"get_prompt"]',
                '[Bastion::Prompt::"github/triage"].contains(resource)',
            ],
        ),
        (
            "{upstream: github, resources: ['file:///docs/*', 'mem://x'], allow: {clients: [c]}}",
            [
                '(resource.uri like "file:///docs/*" || resource.uri like "mem://x")',
                "resource is Bastion::McpResource",
            ],
        ),
        (  # case-insensitive: both sides case-folded
            "{upstream: github, tools: [x], args: {repo: {match: 'ACME/*', case: insensitive}}}",
            ['context.args_casefold has repo && context.args_casefold.repo like "acme/*"'],
        ),
        (  # a literal star, and a quote, escaped for Cedar
            "{upstream: github, tools: [x], args: {q: {match: 'a\\*\"b*'}}}",
            ['context.args.q like "a\\*\\"b*"'],
        ),
        (
            "{upstream: github, tools: [x], deny: {groups: [interns]}, args: {repo: {match: 'prod/*'}}}",
            ["forbid (", '&& (context.args has repo && context.args.repo like "prod/*")\n};'],
        ),
        (
            "{id: 'my rule', upstream: github, tools: ['*']}",
            ['@id("my rule")', "permit (", "resource is Bastion::Tool in"],
        ),
    ],
)
def test_rule_to_cedar(rule: str, fragments: list[str]) -> None:
    text = cedar_text(compiled(BASE + f"policies:\n  - {rule}\n"))
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in\n{text}"


def test_deny_rules_with_arguments_do_not_apply_while_listing() -> None:
    policy = compiled(
        BASE + "policies:\n  - {upstream: github, tools: [x], deny: {groups: [i]}, args: {r: {match: a}}}\n"
    )
    assert policy.entries[0].for_listing() is None


def test_schema_lists_every_constrained_argument() -> None:
    policy = compiled(
        BASE
        + """
policies:
  - {upstream: github, tools: [a], args: {repo: {match: "acme/*"}}}
  - {upstream: github, prompts: [p], args: {Topic_1: {match: "*", case: insensitive}}}
"""
    )
    assert policy.arg_names == frozenset({"repo", "Topic_1"})
    assert "type Args = { Topic_1?: String, repo?: String };" in policy.schema
    assert "entity User in [Group] { username: String, email?: String, roles: Set<String> };" in policy.schema
    assert (
        "action call_tool appliesTo { principal: [User, Client], resource: [Tool], context: Context };"
        in policy.schema
    )
    assert "action list_tools appliesTo" in policy.schema
    assert "action use_upstream appliesTo" in policy.schema
    assert (
        "type Args = {  };" in compiled(ISSUE_EXAMPLE.replace('args: {repo: {match: "acme/*"}}', "")).schema
    )


def test_files_default_ids_are_file_and_line(tmp_path: Path) -> None:
    rules = """# team rules
policies:
  - upstream: github
    tools: [create_issue]
    allow: {groups: [engineering]}

  - id: named
    upstream: bank
    deny: {clients: [x]}
"""
    cedar = """// extra
@id("era-guard")
forbid (principal, action == Bastion::Action::"call_tool", resource in Bastion::Upstream::"bank")
when { context.era == "legacy" };

permit (principal, action in [Bastion::Action::"read_resource"], resource)
when { resource.uri like "mem://*" && context.time > 0 };
"""
    text = BASE + "policy: {files: [team.yaml, extra.cedar]}\n"
    policy = compiled(text, {"team.yaml": rules, "extra.cedar": cedar}, tmp_path)
    assert [(e.rule_id, e.location) for e in policy.entries] == [
        ("team.yaml:3", "team.yaml:3"),
        ("named", "team.yaml:7"),
        ("era-guard", "extra.cedar:2"),
        ("extra.cedar:6", "extra.cedar:6"),
    ]
    guard, reader = policy.entries[2:]
    assert (guard.upstream, guard.actions, guard.context) == (
        "bank",
        frozenset({"call_tool"}),
        frozenset({"era"}),
    )
    assert reader.reads_resource
    assert reader.reads_time
    assert not reader.governing


def test_raw_cedar_is_indexed_by_what_it_names(tmp_path: Path) -> None:
    cedar = """permit (principal, action, resource == Bastion::Tool::"github/deploy")
when { context.args has env && context.args.env == "staging" };
forbid (principal, action, resource) when { resource == Bastion::Prompt::"bank/secrets" };
"""
    policy = compiled(BASE + "policy: {files: [x.cedar]}\n", {"x.cedar": cedar}, tmp_path)
    deploy, secrets = policy.entries
    assert (deploy.upstream, deploy.rtype, deploy.names, deploy.governing) == (
        "github",
        "Tool",
        frozenset({"deploy"}),
        True,
    )
    assert deploy.arg_names == frozenset({"env"})
    assert "env" in policy.arg_names
    assert (secrets.upstream, secrets.names) == (None, None)
    assert {("Tool", "github", "deploy"), ("Prompt", "bank", "secrets")} <= policy.named


@pytest.mark.parametrize(
    ("files", "config", "message"),
    [
        (  # a syntax error in a .cedar file: file and line of the policy
            {
                "x.cedar": "permit (principal, action, resource);\n\n// two\n"
                "forbid (principal action, resource);\n"
            },
            "policy: {files: [x.cedar]}",
            "x.cedar:4: Cedar syntax error: unexpected token",
        ),
        (  # an attribute the schema does not have
            {
                "x.cedar": "permit (principal, action, resource);\n\npermit (principal, action, resource)\n"
                'when { principal.department == "eng" };\n'
            },
            "policy: {files: [x.cedar]}",
            "x.cedar:3: attribute `department` on entity type `Bastion::User` not found",
        ),
        (  # an action the schema does not have
            {"x.cedar": 'permit (principal, action == Bastion::Action::"delete_repo", resource);\n'},
            "policy: {files: [x.cedar]}",
            'x.cedar:1: unrecognized action `Bastion::Action::"delete_repo"`',
        ),
        (
            {"x.cedar": "permit (principal == ?principal, action, resource);\n"},
            "policy: {files: [x.cedar]}",
            "x.cedar:1: policy templates",
        ),
        (  # a YAML rule that names an upstream that is not configured
            {
                "r.yaml": "policies:\n  - upstream: github\n    tools: [a]\n"
                "  - upstream: gitlab\n    tools: [a]\n"
            },
            "policy: {files: [r.yaml]}",
            "r.yaml:4: policies[1]: upstream 'gitlab' is not configured",
        ),
        (
            {"r.yaml": "policies:\n  - upstream: github\n    tools: [a]\n    requires: [x]\n"},
            "policy: {files: [r.yaml]}",
            "r.yaml:4: policies[0].requires: unknown key",
        ),
        (
            {"r.yaml": "policies:\n  - upstream: github\n    tools: [a]\n    require_scopes: [admin]\n"},
            "policy: {files: [r.yaml]}",
            "r.yaml:2: policies[0]: require_scopes ['admin'] are not in auth.scopes",
        ),
        (
            {"r.yaml": "policies:\n  - upstream: github\n    tools: [a\n"},
            "policy: {files: [r.yaml]}",
            "r.yaml:4: not valid YAML",
        ),
        ({"r.yaml": "rules: []\n"}, "policy: {files: [r.yaml]}", "r.yaml:1: unknown key"),
        (
            {"r.yaml": "policies:\n  - {id: dup, tools: [a]}\n"},
            "policies: [{id: dup, tools: [b]}]\npolicy: {files: [r.yaml]}",
            "r.yaml:2: rule id 'dup' is also used at policies[0]",
        ),
        ({}, "policy: {files: [missing.cedar]}", "missing.cedar: no such policy file"),
        ({"r.txt": ""}, "policy: {files: [r.txt]}", "r.txt: policy files end in .yaml, .yml or .cedar"),
        (
            {"r.yaml": "policies:\n  - {upstream: github, tools: [a], args: {p: {match: 'docs/../*'}}}\n"},
            "policy: {files: [r.yaml]}",
            "r.yaml:2: args.p.match is not in canonical form",
        ),
    ],
)
def test_errors_name_the_file_and_line(
    tmp_path: Path, files: dict[str, str], config: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        compiled(BASE + config + "\n", files, tmp_path)
    assert message in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ("[{upstream: gitlab, tools: [a]}]", "policies[0]: upstream 'gitlab' is not configured"),
        (
            "[{id: x, tools: [a]}, {id: x, tools: [b]}]",
            "policies[1] ('x'): id 'x' is also used by policies[0]",
        ),
        (
            "[{tools: [a], require_scopes: [nope]}]",
            "policies[0]: require_scopes ['nope'] are not in auth.scopes",
        ),
        ("[{tools: [a], allow: {groups: [g]}, deny: {groups: [h]}}]", "a rule either allows or denies"),
        (
            "[{tools: [a], deny: {groups: [h]}, require_scopes: [mcp]}]",
            "require_scopes applies to allowing rules",
        ),
        ("[{upstream: github, args: {repo: {match: x}}}]", "args constrain tools or prompts"),
        ("[{tools: [a], allow: {}}]", "name at least one of users, groups, roles, attributes or clients"),
        ("[{tools: ['*', a]}]", "'*' already covers every name"),
        ("[{tools: [a], args: {'bad-name': {match: x}}}]", "argument name 'bad-name'"),
        ("[{tools: [a], visibility: shown}]", "policies[0].visibility"),
    ],
)
def test_main_config_rules_are_checked_with_the_rest(policies: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(BASE + f"policies: {policies}\n")
    assert message in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("{upstreams: {gitlab: deny}}", "policy.upstreams: 'gitlab' is not configured"),
        (
            "{scope_implies: {'crm:write': ['crm:read']}}",
            "policy.scope_implies: ['crm:read', 'crm:write'] are not in",
        ),
    ],
)
def test_policy_settings_are_checked(policy: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(BASE + f"policy: {policy}\n")
    assert message in str(refused.value)


def test_engine_from_settings_reads_files_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text('forbid (principal, action, resource in Bastion::Upstream::"bank");\n')
    engine = CedarPolicy.from_settings(settings(BASE + "policy: {files: [p.cedar]}\n"), base_dir=tmp_path)
    assert [e.location for e in engine.compiled.entries] == ["p.cedar:1"]
