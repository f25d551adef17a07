"""YAML rules → Cedar policies, raw Cedar analysed, everything validated against the schema.

A rule becomes one ``permit`` (``allow``, or neither ``allow`` nor ``deny``) or one ``forbid``
(``deny``) per kind it names (tools, prompts, resources), annotated ``@id("<rule id>")``::

    - id: eng-write
      upstream: github
      tools: [create_issue, comment]
      require_scopes: [github:write]
      allow: {groups: [engineering], attributes: {level: [2, 3]}, clients: [claude]}
      args: {repo: {match: "acme/*"}}

    @id("eng-write")
    permit (
      principal,
      action in [Bastion::Action::"call_tool"],
      resource is Bastion::Tool in Bastion::Upstream::"github"
    ) when {
      [Bastion::Tool::"github/comment", Bastion::Tool::"github/create_issue"].contains(resource)
      && (principal is Bastion::User && (principal in [Bastion::Group::"engineering"])
          && (principal has level && [2, 3].contains(principal.level)))
      && ["claude"].contains(context.client)
      && context.scopes.containsAll(["github:write"])
      && (context.args has repo && context.args.repo like "acme/*")
    };

Users, groups and roles are alternatives (any of them); every attribute condition must hold
too (a ``set`` attribute: ``principal.<name>.containsAny([...])``); all of it applies to users
only (``principal is Bastion::User``), and clients, when given, are required on top.

While a list is filtered, arguments are unknown: an allowing rule is evaluated without its
argument constraints, a denying rule with argument constraints not at all (``Entry.for_listing``).

A rule with no tools, prompts or resources covers the whole upstream (every action on it).
Every policy becomes an :class:`Entry` that also records what it can apply to (actions,
upstream, entity type, names), so the engine evaluates only the slice that can matter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import cedarpy

from bastion.config.policy import ANY, PolicyRule, Who
from bastion.core.attributes import AttributeType
from bastion.core.errors import ConfigError
from bastion.policy import canonical
from bastion.policy.entry import Conditions, Effect, Entry, Named
from bastion.policy.raw import cedar_entry
from bastion.policy.schema import (
    GROUP,
    KIND_ACTION,
    KIND_TYPE,
    RESOURCE,
    UPSTREAM,
    USER,
    action,
    entity,
    like_literal,
    literal,
    qualified,
    quote,
    schema_text,
)
from bastion.policy.source import PolicySources, YamlRule


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    entries: tuple[Entry, ...]
    schema: str
    arg_names: frozenset[str]
    named: frozenset[Named]
    upstreams: tuple[str, ...]
    attributes: Mapping[str, AttributeType] = field(default_factory=dict)  # policy.user_attributes


Declared = Mapping[str, AttributeType]


# -- YAML rules ---------------------------------------------------------------------------------


def _attribute(name: str, values: list[str | int | bool], kind: AttributeType) -> str:
    listed = f"[{', '.join(literal(v) for v in values)}]"
    if kind == "set":
        return f"(principal has {name} && principal.{name}.containsAny({listed}))"
    return f"(principal has {name} && {listed}.contains(principal.{name}))"


def _who(who: Who, declared: Declared) -> list[str]:
    subject: list[str] = []
    if who.users:
        subject.append(f"[{', '.join(entity(USER, u) for u in who.users)}].contains(principal)")
        subject.append(f"[{', '.join(quote(u) for u in who.users)}].contains(principal.username)")
        emails = [u for u in who.users if "@" in u]
        if emails:
            subject.append(
                f"(principal has email && [{', '.join(quote(e) for e in emails)}].contains(principal.email))"
            )
    if who.groups:
        subject.append(f"principal in [{', '.join(entity(GROUP, g) for g in who.groups)}]")
    if who.roles:
        subject.append(f"principal.roles.containsAny([{', '.join(quote(r) for r in who.roles)}])")
    user = [f"({' || '.join(subject)})"] if subject else []
    user += [_attribute(n, v, declared[n]) for n, v in sorted(who.attributes.items())]
    parts = [f"(principal is {qualified(USER)} && {' && '.join(user)})"] if user else []
    if who.clients:
        parts.append(f"[{', '.join(quote(c) for c in who.clients)}].contains(context.client)")
    return parts


def _args(rule: PolicyRule, where: str) -> str:
    checks = []
    for name, arg in sorted(rule.args.items()):
        if not canonical.is_canonical("x".join(canonical.split_pattern(arg.match))):
            raise ConfigError(f"{where}: args.{name}.match is not in canonical form (see the args docs)")
        field, pattern = "args", arg.match
        if arg.case == "insensitive":
            field, pattern = "args_casefold", canonical.fold(pattern)
        checks.append(f"context.{field} has {name} && context.{field}.{name} like {like_literal(pattern)}")
    return "(" + " && ".join(checks) + ")"


def _conditions(rule: PolicyRule, declared: Declared) -> Conditions:
    """The same clauses as :func:`_who`, the scopes and :func:`_args`, for the native evaluator."""
    who = rule.deny if rule.deny is not None else rule.allow
    args = tuple(
        (name, canonical.fold(a.match), True) if a.case == "insensitive" else (name, a.match, False)
        for name, a in sorted(rule.args.items())
    )
    base = Conditions(scopes=frozenset(rule.require_scopes), args=args)
    if who is None:
        return base
    return replace(
        base,
        users=frozenset(who.users),
        emails=frozenset(u for u in who.users if "@" in u),
        groups=frozenset(who.groups),
        roles=frozenset(who.roles),
        attributes=tuple(
            (name, frozenset(values), declared[name] == "set")
            for name, values in sorted(who.attributes.items())
        ),
        clients=frozenset(who.clients) if who.clients else None,
    )


def _kinds(rule: PolicyRule) -> list[tuple[str, list[str]]]:
    kinds = [("tool", rule.tools), ("prompt", rule.prompts), ("resource", rule.resources)]
    return [(k, v) for k, v in kinds if v is not None]


def _rule_entries(item: YamlRule, upstreams: tuple[str, ...], declared: Declared) -> list[Entry]:
    rule = item.rule
    effect: Effect = "forbid" if rule.deny is not None else "permit"
    upstream = None if rule.upstream == ANY else rule.upstream
    common: list[str] = []
    fields: set[str] = set()
    who = rule.deny if rule.deny is not None else rule.allow
    if who is not None:
        undeclared = sorted(set(who.attributes) - set(declared))
        if undeclared:  # checked with the settings already; never emit an unknown attribute
            raise ConfigError(f"{item.location}: attributes {undeclared} are not in policy.user_attributes")
        common.extend(_who(who, declared))
        fields |= {"client"} if who.clients else set()
    if rule.require_scopes:
        common.append(f"context.scopes.containsAll([{', '.join(quote(s) for s in rule.require_scopes)}])")
        fields.add("scopes")
    args = _args(rule, item.location) if rule.args else None
    tests = _conditions(rule, declared)
    arg_fields = {"args_casefold" if a.case == "insensitive" else "args" for a in rule.args.values()}
    head = f"@id({quote(item.rule_id)})\n{effect} (\n  principal,\n"
    in_upstream = f" in {entity(UPSTREAM, upstream)}" if upstream else ""

    def make(
        scope: str,
        first: list[str],
        actions: frozenset[str] | None,
        rtype: str | None,
        *,
        names: frozenset[str] | None = None,
        patterns: tuple[str, ...] | None = None,
        named: frozenset[Named] = frozenset(),
        items: frozenset[str] | None = None,
    ) -> Entry:
        constrained = args is not None and rtype != RESOURCE
        conditions = [*first, *common]
        native = replace(tests, items=items, uris=patterns, args=tests.args if constrained else ())
        return Entry(
            text=_policy(scope, [*conditions, args] if constrained and args else conditions),
            rule_id=item.rule_id,
            location=item.location,
            effect=effect,
            origin="yaml",
            actions=actions,
            upstream=upstream,
            rtype=rtype,
            names=names,
            governing=effect == "permit",
            require_scopes=tuple(sorted(set(rule.require_scopes))),
            visible=rule.visibility == "visible",
            arg_names=frozenset(rule.args) if constrained else frozenset(),
            uri_patterns=patterns,
            named=named,
            context=frozenset(fields | (arg_fields if constrained else set())),
            scopes_read=frozenset(rule.require_scopes),
            # while listing: an allowing rule without its argument constraints; a denying one not at all
            listing_text=_policy(scope, conditions) if constrained and effect == "permit" else None,
            in_listing=not (constrained and effect == "forbid"),
            conditions=native,
        )

    kinds = _kinds(rule)
    if not kinds:  # the whole upstream (or everything)
        return [make(f"{head}  action,\n  resource{in_upstream}\n)", [], None, None)]
    out = []
    for kind, values in kinds:
        rtype, action_name = KIND_TYPE[kind], KIND_ACTION[kind]
        scope = (
            f"{head}  action in [{action(action_name)}],\n  resource is {qualified(rtype)}{in_upstream}\n)"
        )
        actions = frozenset({action_name})
        if values == [ANY]:
            out.append(make(scope, [], actions, rtype))
        elif kind == "resource":
            membership = "(" + " || ".join(f"resource.uri like {like_literal(p)}" for p in values) + ")"
            out.append(make(scope, [membership], actions, rtype, patterns=tuple(values)))
        else:
            hosts = upstreams if upstream is None else (upstream,)
            ids = sorted(f"{u}/{n}" for u in hosts for n in values)
            membership = f"[{', '.join(entity(rtype, i) for i in ids)}].contains(resource)"
            named = frozenset((rtype, u, n) for u in hosts for n in values)
            out.append(
                make(
                    scope,
                    [membership],
                    actions,
                    rtype,
                    names=frozenset(values),
                    named=named,
                    items=frozenset(ids),
                )
            )
    return out


def _policy(head: str, conditions: list[str]) -> str:
    if not conditions:
        return head + ";"
    return head + " when {\n  " + "\n  && ".join(c for c in conditions if c) + "\n};"


# -- compile + validate -------------------------------------------------------------------------

_POLICY_PREFIX = re.compile(r"^for policy `policy(\d+)`, ")


def validate(entries: Iterable[Entry], schema: str) -> None:
    """Raise ConfigError naming the file and line of every policy the schema refuses."""
    listed = list(entries)
    result = cedarpy.validate_policies("\n".join(e.text for e in listed), schema)
    if result.validation_passed:
        return
    problems: list[str] = []
    for error in result.errors:
        match = re.fullmatch(r"policy(\d+)", error.policy_id)
        where = (
            listed[int(match.group(1))].location if match and int(match.group(1)) < len(listed) else "policy"
        )
        line = f"{where}: {_POLICY_PREFIX.sub('', error.error)}"
        if line not in problems:
            problems.append(line)
    raise ConfigError("invalid policy:\n  " + "\n  ".join(problems or ["the schema refused the policies"]))


def compile_sources(sources: PolicySources, upstreams: Iterable[str]) -> CompiledPolicy:
    names = tuple(upstreams)
    entries: list[Entry] = []
    declared = dict(sources.attributes)
    for rule in sources.rules:
        entries.extend(_rule_entries(rule, names, declared))
    entries.extend(cedar_entry(policy) for policy in sources.cedar)
    arg_names = frozenset(a for e in entries for a in e.arg_names)
    schema = schema_text(arg_names, declared)
    validate(entries, schema)
    named = frozenset(n for e in entries for n in e.named if n[1] in names)
    return CompiledPolicy(tuple(entries), schema, arg_names, named, names, declared)


def cedar_text(compiled: CompiledPolicy) -> str:
    """The whole policy as Cedar (for ``bastion policy show`` and the docs)."""
    return "\n\n".join(e.text for e in compiled.entries) + "\n"


__all__ = ["CompiledPolicy", "cedar_text", "compile_sources", "validate"]
