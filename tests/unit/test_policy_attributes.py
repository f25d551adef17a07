"""User attributes in policy (issue #6: "users (with groups, roles, attributes)"): declaring them
(``policy.user_attributes``), YAML ``attributes`` conditions → Cedar, the schema raw Cedar is
validated against, decisions by both evaluators, ``policy test``'s account, lint and reload."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bastion.config import load_config_text
from bastion.config.policy import Who
from bastion.core.errors import ConfigError
from bastion.core.records import Era, Principal, request_call
from bastion.policy.compiler import cedar_text
from bastion.policy.engine import CedarPolicy
from bastion.policy.lint import Known, covers_who, lint
from bastion.policy.loader import load_policy
from bastion.policy.reload import PolicyHolder, PolicyReloader
from bastion.policy.source import YamlRule

DECLARED = "{department: string, level: long, contractor: bool, regions: set}"
HEAD = f"""
auth: {{scopes: [mcp]}}
upstreams:
  - {{name: erp, http: {{url: "http://127.0.0.1:9/mcp"}}}}
policy: {{default: deny, user_attributes: {DECLARED}}}
"""


def engine(policies: str, head: str = HEAD, base_dir: Path | None = None) -> CedarPolicy:
    return CedarPolicy.from_settings(load_config_text(f"{head}policies:\n{policies}", {}), base_dir=base_dir)


def user(*attributes: tuple[str, object], groups: tuple[str, ...] = ()) -> Principal:
    return Principal(
        "u1",
        client_id="agent",
        groups=frozenset(groups),
        authenticated=True,
        username="ann",
        attributes=tuple(sorted(attributes)),  # type: ignore[arg-type]  # wrong types on purpose too
    )


def decide(policy: CedarPolicy, who: Principal, tool: str = "t") -> tuple[bool, bool]:
    """(native, Cedar): the two evaluators' verdicts, without the cache."""
    out = []
    for native in (True, False):
        policy.evaluator.native = native
        policy._cache.clear()
        out.append(
            policy.decide(who, request_call("erp", "tools/call", {"name": tool}, era=Era.MODERN)).allowed
        )
    policy.evaluator.native = True
    return out[0], out[1]


# -- declaring and validating -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("{in: string}", "attribute name 'in' is reserved"),
        ("{roles: set}", "attribute name 'roles' is reserved"),
        ("{principal: string}", "attribute name 'principal' is reserved"),
        ("{1st: string}", "must be letters, digits and '_'"),
        ("{dept: text}", "Input should be 'string', 'long', 'bool' or 'set'"),
        ("{" + ", ".join(f"a{i}: bool" for i in range(33)) + "}", "declare at most 32 attributes"),
    ],
)
def test_declarations_are_checked(declared: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(HEAD.replace(DECLARED, declared), {})


def test_attributes_alone_name_someone_and_list_values() -> None:
    who = Who.model_validate({"groups": ["g"], "attributes": {"level": [1, 2]}, "clients": ["c"]})
    assert who.describe() == "groups g; level in 1, 2; clients c"
    assert (
        Who.model_validate({"attributes": {"department": ["finance"]}}).describe() == "department in finance"
    )
    with pytest.raises(ValueError, match="list at least one value"):
        Who.model_validate({"attributes": {"department": []}})
    with pytest.raises(ValueError, match="name at least one of users, groups, roles, attributes or clients"):
        Who.model_validate({})


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (
            "{attributes: {dept: [x]}}",
            "policies[0]: allow.attributes: 'dept' is not declared in policy.user_attributes",
        ),
        (
            "{attributes: {level: ['3']}}",
            "allow.attributes.level: values must be whole numbers (level is declared long)",
        ),
        ("{attributes: {contractor: [1]}}", "values must be true or false"),
        ("{attributes: {department: [7]}}", "allow.attributes.department: values must be strings"),
        ("{attributes: {regions: [true]}}", "allow.attributes.regions: values must be strings"),
        ("{attributes: {level: [9223372036854775808]}}", "values must fit in 64 bits"),
    ],
)
def test_rules_name_declared_attributes_with_values_of_their_type(who: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_text(f"{HEAD}policies:\n  - {{tools: [t], allow: {who}}}\n", {})


def test_a_policy_file_names_the_line_of_a_rule_with_an_undeclared_attribute(tmp_path: Path) -> None:
    (tmp_path / "team.yaml").write_text(
        "policies:\n  - tools: [t]\n\n  - tools: [u]\n    deny: {attributes: {x: [1]}}\n"
    )
    head = HEAD.replace("default: deny,", "default: deny, files: [team.yaml],")
    with pytest.raises(
        ConfigError, match=r"team.yaml:4: policies\[1\]: deny.attributes: 'x' is not declared"
    ):
        engine("  - {tools: [v]}\n", head, tmp_path)


def test_identity_providers_map_declared_attributes_only() -> None:
    idp = """
identity_providers:
  - name: kc
    preset: keycloak
    issuer: https://kc.example/realms/acme
    client_id: bastion
    client_secret: s
    claims: {attributes: %s}
"""
    load_config_text(HEAD + idp % "{department: org.department}", {})
    with pytest.raises(
        ConfigError, match=r"claims.attributes \['team'\] are not declared in policy.user_attributes"
    ):
        load_config_text(HEAD + idp % "{team: team}", {})
    with pytest.raises(ConfigError, match="attribute 'idp_roles' is set by Bastion itself"):
        load_config_text(HEAD + idp % "{idp_roles: roles}", {})


# -- YAML → Cedar, the schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "fragment"),
    [
        (
            "{attributes: {department: [finance, ops]}}",
            "(principal is Bastion::User && (principal has department"
            ' && ["finance", "ops"].contains(principal.department)))',
        ),
        ("{attributes: {level: [3, -1]}}", "(principal has level && [3, -1].contains(principal.level))"),
        (
            "{attributes: {contractor: [false]}}",
            "(principal has contractor && [false].contains(principal.contractor))",
        ),
        ("{attributes: {regions: [eu]}}", '(principal has regions && principal.regions.containsAny(["eu"]))'),
        (  # any of the groups, AND every attribute, all for users only; the client on top
            '{groups: [g1, g2], attributes: {level: [2], department: ["a\\"b"]}, clients: [agent]}',
            '(principal is Bastion::User && (principal in [Bastion::Group::"g1", Bastion::Group::"g2"])'
            ' && (principal has department && ["a\\"b"].contains(principal.department))'
            " && (principal has level && [2].contains(principal.level)))\n"
            '  && ["agent"].contains(context.client)',
        ),
    ],
)
def test_attribute_conditions_to_cedar(who: str, fragment: str) -> None:
    text = cedar_text(engine(f"  - {{tools: [t], allow: {who}}}\n").compiled)
    assert fragment in text, text


def test_the_schema_declares_the_attributes_and_raw_cedar_reads_them(tmp_path: Path) -> None:
    cedar = '@id("finance")\npermit (principal, action, resource == Bastion::Tool::"erp/t")\n'
    cedar += 'when { principal has department && principal.department == "finance" };\n'
    (tmp_path / "x.cedar").write_text(cedar)
    head = HEAD.replace("default: deny,", "default: deny, files: [x.cedar],")
    policy = engine("  - {tools: [u], allow: {attributes: {regions: [eu]}}}\n", head, tmp_path)
    assert (
        "entity User in [Group] { username: String, email?: String, roles: Set<String>, contractor?: Bool, "
        "department?: String, level?: Long, regions?: Set<String> };"
    ) in policy.compiled.schema
    assert decide(policy, user(("department", "finance"))) == (True, True)
    assert decide(policy, user(("department", "sales"))) == (False, False)
    (tmp_path / "x.cedar").write_text(
        cedar + 'permit (principal, action, resource) when { principal.team == "a" };\n'
    )
    with pytest.raises(ConfigError, match=r"x\.cedar:4: .*team"):  # undeclared: the schema refuses it
        engine("  - {tools: [u]}\n", head, tmp_path)


# -- decisions ----------------------------------------------------------------------------------


def test_every_attribute_must_hold_and_any_user_part() -> None:
    policy = engine(
        "  - {tools: [t], allow: {groups: [g1], users: [zed],"
        " attributes: {department: [finance], level: [2, 3]}}}\n"
        "  - {tools: [u], allow: {attributes: {regions: [eu, apac]}}}\n"
        "  - {tools: [t, u], deny: {attributes: {contractor: [true]}}}\n"
    )
    finance = (("department", "finance"), ("level", 3))
    assert decide(policy, user(*finance, groups=("g1",))) == (True, True)
    assert decide(policy, user(*finance)) == (False, False)  # none of users/groups
    assert decide(policy, user(("department", "finance"), groups=("g1",))) == (False, False)  # no level
    assert decide(policy, user(*finance, ("contractor", True), groups=("g1",))) == (False, False)  # denied
    assert decide(policy, user(("regions", ("eu", "us"))), "u") == (True, True)  # any member
    assert decide(policy, user(("regions", ("us",))), "u") == (False, False)
    assert decide(policy, user(("regions", ())), "u") == (False, False)
    robot = Principal("agent", client_id="agent", authenticated=True, attributes=(("regions", ("eu",)),))
    assert decide(policy, robot, "u") == (False, False)  # attributes are about users


def test_values_of_another_type_than_declared_are_ignored() -> None:
    """A token issued before a declaration changed: the value is left out for both evaluators."""
    policy = engine(
        "  - {tools: [t], allow: {attributes: {level: [1]}}}\n"
        "  - {tools: [u], allow: {attributes: {contractor: [true]}}}\n"
    )
    assert decide(policy, user(("level", 1))) == (True, True)
    assert decide(policy, user(("level", "1"))) == (False, False)
    assert decide(policy, user(("level", True))) == (False, False)  # True == 1 in Python, not in Cedar
    assert decide(policy, user(("contractor", 1)), "u") == (False, False)
    assert decide(policy, user(("level", ("1",)))) == (False, False)


def test_cached_decisions_depend_on_the_attributes() -> None:
    policy = engine("  - {tools: [t], allow: {attributes: {department: [finance]}}}\n")
    call = request_call("erp", "tools/call", {"name": "t"}, era=Era.MODERN)
    assert policy.decide(user(("department", "finance")), call).allowed
    assert not policy.decide(user(("department", "sales")), call).allowed
    assert policy.decide(user(("department", "finance")), call).allowed


def test_explain_shows_the_attributes() -> None:
    policy = engine("  - {tools: [t], allow: {attributes: {regions: [eu]}}}\n")
    who = user(("level", 2), ("regions", ("eu", "us")), ("zz", "x"))
    text = policy.explain(who, request_call("erp", "tools/call", {"name": "t"}, era=Era.MODERN))
    assert "  attributes: level=2, regions=[eu, us], zz=x (not declared as such: ignored)" in text
    assert "decision: ALLOW" in text


# -- lint and reload ----------------------------------------------------------------------------


def _rules(*texts: str) -> list[YamlRule]:
    policy = engine("".join(f"  - {t}\n" for t in texts))
    settings = load_config_text(f"{HEAD}policies:\n" + "".join(f"  - {t}\n" for t in texts), {})
    assert policy.compiled.attributes == settings.policy.user_attributes
    return [YamlRule(r, f"policies[{i}]", f"policies[{i}]") for i, r in enumerate(settings.policies)]


def test_lint_flags_attribute_values_nobody_has() -> None:
    rules = _rules("{tools: [t], allow: {attributes: {department: [finance, sales], level: [2]}}}")
    known = Known(
        frozenset(),
        frozenset(),
        frozenset(),
        frozenset(),
        attribute_values=frozenset({("department", "sales")}),
    )
    assert [f.message for f in lint(rules, known)] == [
        "allow.attributes.department: no user in the store has department 'finance' and no identity provider "
        "maps it: may never match",
        "allow.attributes.level: no user in the store has level 2 and no identity provider maps it: "
        "may never match",
    ]
    mapped = Known(
        frozenset(), frozenset(), frozenset(), frozenset(), idp_attributes=frozenset({"department", "level"})
    )
    assert lint(rules, mapped) == []


@pytest.mark.parametrize(
    ("deny", "who", "covered"),
    [
        ({"attributes": {"regions": ["eu", "us"]}}, {"attributes": {"regions": ["eu"]}}, True),
        ({"attributes": {"regions": ["eu"]}}, {"attributes": {"regions": ["eu", "us"]}}, False),
        ({"attributes": {"level": [1]}}, {"groups": ["g"]}, False),  # g's members may lack level 1
        ({"groups": ["g"]}, {"groups": ["g"], "attributes": {"level": [1]}}, True),  # narrower
    ],
)
def test_a_deny_on_attributes_covers_narrower_conditions_only(
    deny: dict[str, object], who: dict[str, object], covered: bool
) -> None:
    assert covers_who(Who.model_validate(deny), Who.model_validate(who)) is covered


def test_a_reload_that_changes_the_declarations_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(f"{HEAD}policies: [{{tools: [t], allow: {{attributes: {{level: [1]}}}}}}]\n")
    settings = load_config_text(config.read_text(), {}, str(config))
    reloader = PolicyReloader(PolicyHolder(load_policy(settings)), settings, config_path=config, env={})
    config.write_text(config.read_text().replace("level: long", "level: long, team: string"))
    mtime = config.stat().st_mtime_ns + 1_000_000_000
    os.utime(config, ns=(mtime, mtime))
    outcome = reloader.reload("edit")
    assert not outcome.accepted
    assert "policy.user_attributes changed: restart Bastion to apply it" in outcome.detail
