"""bastion.policy.native: slices of YAML rules are decided in Python with exactly Cedar's result.

Differential: random rule sets in the YAML model (users, groups, roles, user attributes of each
declared type, clients, scopes, argument patterns, visibility, defaults) and random principals
(with attribute values of the declared type and of others) and calls; one engine decides everything
twice, with the native evaluator and with Cedar only, and the two must agree on the decision,
its reason, the rule ids, the step-up scopes and every filtered list.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.config import load_config_text
from bastion.core.records import Decision, Era, InboundCall, Principal, request_call
from bastion.policy.engine import CedarPolicy

UPSTREAMS = ("a", "b")
TOOLS = ("t1", "t2", "T1", "t*", "a/t1")
PROMPTS = ("p1", "p2")
URIS = ("file:///x/y", "file:///x/z", "file:///X/y", "mem://k", "file:///x/a*b")
URI_PATTERNS = ("file:///x/*", "file:///x/y", "*", "mem://*", "file:///x/a\\*b")
USERS = ("alice", "u-bob", "carol@acme.example", "")
GROUPS = ("g1", "g2", "G1")
ROLES = ("r1", "r2")
CLIENTS = ("c1", "c2", "")
SCOPES = ("s1", "s2", "s3")
ARGS = ("repo", "q")
DECLARED = {"dept": "string", "level": "long", "flag": "bool", "tags": "set"}
RULE_VALUES: dict[str, tuple[object, ...]] = {
    "dept": ("fin", "ops", "Fin"),
    "level": (0, 1, 2),
    "flag": (True, False),
    "tags": ("eu", "us", "x"),
}
# what principals carry: the declared type, and others (a token issued under another declaration)
USER_VALUES: dict[str, tuple[object, ...]] = {
    "dept": ("fin", "ops", "x", 1),
    "level": (0, 1, True, "1"),
    "flag": (True, False, 1, 0),
    "tags": (("eu",), ("us", "x"), (), "eu", ("1",)),
}
PATTERNS = ("acme/*", "*", "a\\*b", "ACME*", "ac*me", "", "straße*", "*/web")
VALUES = (
    "acme/web",
    "ACME/web",
    "a*b",
    "axb",
    "\u0430cme/web",
    "",
    "acme",
    "STRASSE-x",
    "straße",
    "acme/../x",
)


def _values(name: str) -> st.SearchStrategy[list[object]]:
    return st.lists(st.sampled_from(RULE_VALUES[name]), min_size=1, max_size=2, unique=True)


def _conditions() -> st.SearchStrategy[dict[str, list[object]]]:
    """One attribute condition, sometimes more."""
    return st.sampled_from(sorted(RULE_VALUES)).flatmap(
        lambda k: st.fixed_dictionaries(
            {k: _values(k)}, optional={o: _values(o) for o in RULE_VALUES if o != k}
        )
    )


def _who() -> st.SearchStrategy[dict[str, Any]]:
    parts = st.fixed_dictionaries(
        {},
        optional={
            "users": st.lists(st.sampled_from(USERS), min_size=1, max_size=2, unique=True),
            "groups": st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True),
            "roles": st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True),
            "attributes": _conditions(),
            "clients": st.lists(st.sampled_from(CLIENTS), min_size=1, max_size=2, unique=True),
        },
    )
    return parts.filter(bool)


def _names(values: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just(["*"]), st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True))


@st.composite
def rule(draw: st.DrawFn, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {"upstream": draw(st.sampled_from(("*", *UPSTREAMS)))}
    if draw(st.booleans()):
        out["id"] = f"r{index}"
    kinds = draw(st.sampled_from(("tools", "prompts", "resources", "tools+prompts", "")))
    if "tools" in kinds:
        out["tools"] = draw(_names(TOOLS))
    if "prompts" in kinds:
        out["prompts"] = draw(_names(PROMPTS))
    if kinds == "resources":
        out["resources"] = draw(st.lists(st.sampled_from(URI_PATTERNS), min_size=1, max_size=2, unique=True))
    effect = draw(st.sampled_from(("allow", "deny", "anyone")))
    if effect != "anyone":
        out[effect] = draw(_who())
    if effect != "deny" and draw(st.booleans()):
        out["require_scopes"] = draw(st.lists(st.sampled_from(SCOPES), min_size=1, max_size=2, unique=True))
    if ("tools" in out or "prompts" in out) and draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(ARGS), min_size=1, max_size=2, unique=True))
        out["args"] = {
            n: {
                "match": draw(st.sampled_from(PATTERNS)),
                "case": draw(st.sampled_from(("sensitive", "insensitive"))),
            }
            for n in names
        }
    if draw(st.booleans()):
        out["visibility"] = "visible"
    return out


@st.composite
def config(draw: st.DrawFn) -> str:
    count = draw(st.integers(0, 6))
    rules = [draw(rule(i)) for i in range(count)]
    upstream_defaults = draw(st.dictionaries(st.sampled_from(UPSTREAMS), st.sampled_from(("allow", "deny"))))
    policy = {
        "default": draw(st.sampled_from(("allow", "deny"))),
        "upstreams": upstream_defaults,
        "scope_implies": {"s3": ["s1"]} if draw(st.booleans()) else {},
        "cache_size": draw(st.sampled_from((0, 100))),
        "user_attributes": DECLARED,
    }
    document = {
        "auth": {"scopes": ["mcp", *SCOPES]},
        "upstreams": [{"name": u, "http": {"url": "http://127.0.0.1:9/mcp"}} for u in UPSTREAMS],
        "policy": policy,
        "policies": rules,
    }
    return orjson.dumps(document).decode()  # JSON is YAML


@st.composite
def principal(draw: st.DrawFn) -> Principal:
    scopes = frozenset(draw(st.lists(st.sampled_from(("mcp", *SCOPES)), max_size=3)))
    if draw(st.integers(0, 4)) == 0:  # a client-credentials token
        client = draw(st.sampled_from(("c1", "c2", "alice")))
        return Principal(client, client_id=client, scopes=scopes, authenticated=True)
    username = draw(st.sampled_from(("alice", "bob", "carol", "u-bob", "Alice", "", None)))
    return Principal(
        subject=draw(st.sampled_from(("u-alice", "u-bob", "alice", "x"))),
        client_id=draw(st.sampled_from(("c1", "c2", "C1", None))),
        scopes=scopes,
        groups=frozenset(draw(st.lists(st.sampled_from((*GROUPS, "g3")), max_size=2))),
        roles=frozenset(draw(st.lists(st.sampled_from((*ROLES, "R1")), max_size=2))),
        authenticated=draw(st.booleans()),
        username=username,
        email=draw(st.sampled_from(("carol@acme.example", "Carol@acme.example", "alice@acme.example", None))),
        attributes=tuple(sorted(draw(attributes()).items())),
    )


@st.composite
def attributes(draw: st.DrawFn) -> dict[str, Any]:
    """Most declared attributes, mostly of their declared type (the rules' values among them)."""
    out = {}
    for name, values in USER_VALUES.items():
        if draw(st.integers(0, 3)):
            out[name] = draw(st.sampled_from((*RULE_VALUES[name][:2], *values)))
    return out


def inbound(endpoint: str | None, method: str, params: dict[str, Any], era: Era = Era.LEGACY) -> InboundCall:
    return request_call(endpoint, method, params, era=era)


@st.composite
def call(draw: st.DrawFn) -> InboundCall:
    upstream = draw(st.sampled_from(UPSTREAMS))
    kind = draw(st.sampled_from(("tool", "tool", "prompt", "resource", "list", "other")))
    aggregate = draw(st.booleans())
    args = draw(st.dictionaries(st.sampled_from((*ARGS, "other")), st.sampled_from(VALUES), max_size=2))
    if kind == "list":
        method = draw(st.sampled_from(("tools/list", "prompts/list", "resources/list")))
        return inbound(None if aggregate else upstream, method, {})
    if kind == "other":
        return inbound(upstream, "completion/complete", {})
    if kind == "resource":
        uri = draw(st.sampled_from(URIS))
        return (
            inbound(None, "resources/read", {"uri": f"{upstream}+{uri}"})
            if aggregate
            else inbound(upstream, "resources/read", {"uri": uri})
        )
    name = draw(st.sampled_from((*TOOLS, "x") if kind == "tool" else (*PROMPTS, "x")))
    method = "tools/call" if kind == "tool" else "prompts/get"
    if aggregate:
        return inbound(None, method, {"name": f"{upstream}__{name}", "arguments": args})
    return inbound(upstream, method, {"name": name, "arguments": args})


LIST_ITEMS = {
    "tools": [{"name": n} for n in (*TOOLS, "x")],
    "prompts": [{"name": n} for n in (*PROMPTS, "x")],
    "resources": [{"uri": u} for u in URIS],
}


def _decision(decision: Decision) -> tuple[object, ...]:
    d = decision
    return (d.allowed, d.reason, d.rule, d.step_up, d.canonical_body, d.lists is not None)


def both(engine: CedarPolicy, who: Principal, request: InboundCall) -> tuple[object, object]:
    """(native, Cedar): the decision and, for lists, what each upstream's filter keeps."""
    out = []
    for native in (True, False):
        engine.evaluator.native = native
        engine._cache.clear()  # a decision from the other evaluator must not answer
        engine._lists.clear()
        decision = engine.decide(who, request)
        shown = (
            {
                (u, kind): [str(i) for i in decision.lists.visible(u, kind, items)]
                for u in UPSTREAMS
                for kind, items in LIST_ITEMS.items()
            }
            if decision.lists is not None
            else None
        )
        out.append((_decision(decision), shown))
    engine.evaluator.native = True
    return out[0], out[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config(), st.lists(st.tuples(principal(), call()), min_size=1, max_size=12))
def test_native_and_cedar_agree(text: str, cases: list[tuple[Principal, InboundCall]]) -> None:
    engine = CedarPolicy.from_settings(load_config_text(text, {}))
    for who, request in cases:
        native, cedar = both(engine, who, request)
        assert native == cedar, (who, request.method, request.message)


@st.composite
def attribute_config(draw: st.DrawFn) -> str:
    """Rules about tools whose who is mostly attribute conditions, where attributes decide often."""
    rules = []
    for _ in range(draw(st.integers(1, 4))):
        who = draw(
            st.fixed_dictionaries(
                {"attributes": _conditions()},
                optional={
                    "groups": st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True),
                    "clients": st.lists(st.sampled_from(CLIENTS), min_size=1, max_size=2, unique=True),
                },
            )
        )
        rules.append({"tools": draw(_names(("t1", "t2"))), draw(st.sampled_from(("allow", "deny"))): who})
    document = {
        "auth": {"scopes": ["mcp"]},
        "upstreams": [{"name": "a", "http": {"url": "http://127.0.0.1:9/mcp"}}],
        "policy": {"default": draw(st.sampled_from(("allow", "deny"))), "user_attributes": DECLARED},
        "policies": rules,
    }
    return orjson.dumps(document).decode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attribute_config(), st.lists(st.tuples(principal(), st.sampled_from(("t1", "t2"))), max_size=8))
def test_native_and_cedar_agree_on_attributes(text: str, cases: list[tuple[Principal, str]]) -> None:
    engine = CedarPolicy.from_settings(load_config_text(text, {}))
    for who, tool in cases:
        native, cedar = both(engine, who, inbound("a", "tools/call", {"name": tool}))
        assert native == cedar, (who, tool)


# -- targeted cases --------------------------------------------------------------------------------

HEAD = """
auth: {scopes: [mcp, s1, s2]}
upstreams:
  - {name: a, http: {url: "http://127.0.0.1:9/mcp"}}
  - {name: b, http: {url: "http://127.0.0.1:9/mcp"}}
"""


def engine_for(policies: str, policy: str = "{}") -> CedarPolicy:
    return CedarPolicy.from_settings(load_config_text(f"{HEAD}policy: {policy}\npolicies:\n{policies}", {}))


ALICE = Principal("u-alice", client_id="c1", groups=frozenset({"g1"}), authenticated=True, username="alice")
ROBOT = Principal("c1", client_id="c1", scopes=frozenset({"s1"}), authenticated=True)

TARGETED = [
    # wildcard tools and upstream "*"
    ("  - {tools: ['*'], deny: {clients: [c1]}}\n", "{}", ALICE, inbound("a", "tools/call", {"name": "t"})),
    (
        "  - {upstream: '*', allow: {groups: [g1]}}\n",
        "{default: deny}",
        ALICE,
        inbound("b", "tools/list", {}),
    ),
    (
        "  - {upstream: '*', allow: {groups: [g2]}}\n",
        "{default: deny}",
        ALICE,
        inbound("b", "tools/list", {}),
    ),
    # case-insensitive with a fold that changes length, and a look-alike (Cyrillic U+0430)
    (
        "  - {tools: [t], args: {q: {match: 'straße*', case: insensitive}}}\n",
        "{}",
        ALICE,
        inbound("a", "tools/call", {"name": "t", "arguments": {"q": "STRASSE-1"}}),
    ),
    (
        "  - {tools: [t], args: {q: {match: 'acme/*'}}}\n",
        "{}",
        ALICE,
        inbound("a", "tools/call", {"name": "t", "arguments": {"q": "\u0430cme/web"}}),
    ),
    (
        "  - {tools: [t], args: {q: {match: 'acme/*'}}}\n",
        "{}",
        ALICE,
        inbound("a", "tools/call", {"name": "t", "arguments": {"q": "ACME/web"}}),
    ),
    # a literal star, a missing argument, an empty pattern
    (
        "  - {tools: [t], args: {q: {match: 'a\\\\*b'}}}\n",
        "{}",
        ALICE,
        inbound("a", "tools/call", {"name": "t", "arguments": {"q": "axb"}}),
    ),
    ("  - {tools: [t], args: {q: {match: ''}}}\n", "{}", ALICE, inbound("a", "tools/call", {"name": "t"})),
    # machines match clients but never users, groups or roles; step-up for a missing scope
    (
        "  - {tools: [t], allow: {clients: [c1]}}\n",
        "{default: deny}",
        ROBOT,
        inbound("a", "tools/call", {"name": "t"}),
    ),
    ("  - {tools: [t], allow: {users: [c1]}}\n", "{}", ROBOT, inbound("a", "tools/call", {"name": "t"})),
    ("  - {tools: [t], require_scopes: [s1, s2]}\n", "{}", ALICE, inbound("a", "tools/call", {"name": "t"})),
    # resources: patterns and the default for the URIs no pattern matches
    (
        "  - {resources: ['file:///x/*'], allow: {users: [bob]}}\n",
        "{}",
        ALICE,
        inbound("a", "resources/read", {"uri": "file:///x/y"}),
    ),
    (
        "  - {resources: ['file:///x/*'], allow: {users: [bob]}}\n",
        "{}",
        ALICE,
        inbound("a", "resources/read", {"uri": "file:///z"}),
    ),
]


@pytest.mark.parametrize(("policies", "policy", "who", "request_"), TARGETED)
def test_targeted_cases_agree(policies: str, policy: str, who: Principal, request_: InboundCall) -> None:
    engine = engine_for(policies, policy)
    native, cedar = both(engine, who, request_)
    assert native == cedar


def test_empty_rule_set_and_slices_with_raw_cedar(tmp_path: Any) -> None:
    bare = engine_for("  - {upstream: b, tools: [t], deny: {groups: [zz]}}\n", "{default: deny}")
    native, cedar = both(bare, ALICE, inbound("a", "tools/call", {"name": "t"}))
    assert native == cedar
    (tmp_path / "x.cedar").write_text('permit (principal, action, resource == Bastion::Tool::"a/t");\n')
    rules = "  - {upstream: a, tools: [t], deny: {groups: [zz]}}\n"
    text = f"{HEAD}policy: {{files: [x.cedar]}}\npolicies:\n{rules}"
    mixed = CedarPolicy.from_settings(load_config_text(text, {}), base_dir=tmp_path)
    named = mixed.index.slice("call_tool", "a", "t")
    assert named is not None
    assert not mixed.evaluator.native_for(named)
    generic = mixed.index.slice("call_tool", "a", "other")
    assert generic is not None
    assert "evaluated by: Cedar" in mixed.explain(ALICE, inbound("a", "tools/call", {"name": "t"}))
    assert both(mixed, ALICE, inbound("a", "tools/call", {"name": "t"}))[0][0][0] is True


def test_explain_names_the_evaluator() -> None:
    engine = engine_for("  - {tools: [t], allow: {groups: [g1]}}\n")
    text = engine.explain(ALICE, inbound("a", "tools/call", {"name": "t"}))
    assert "cedar: Allow ('policies[0]')" in text
    assert "evaluated by: the native evaluator (YAML rules only), which agrees with Cedar" in text
