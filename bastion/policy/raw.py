"""Raw Cedar policies, read as typed nodes (``cedarpy.pst``) to learn what each can apply to.

- Action scope: ``action``, ``action == A`` or ``action in [A, B]``.
- Resource scope: ``resource == Bastion::Tool::"github/x"`` concerns that tool only;
  ``resource in Bastion::Upstream::"github"`` (optionally ``is <Type>``) that upstream; anything
  else every upstream. A permit that names an upstream or an item is an allow-list for it, as a
  YAML rule is: the default no longer applies there. A permit on every resource only adds.
- Items named anywhere (also inside ``when``) get their own slice; reads of
  ``context.args.<name>`` make ``<name>`` a constrained argument (canonical form enforced);
  reads of ``context.time`` keep the slice's decisions out of the cache; reads of resource
  attributes make lists judge each item alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any

from cedarpy import pst

from bastion.core.errors import ConfigError
from bastion.policy.entry import Entry, Named
from bastion.policy.schema import ITEM_TYPES, NAMESPACE, UPSTREAM
from bastion.policy.source import CedarPolicy


def _nodes(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        value = stack.pop()
        yield value
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, tuple):
            stack.extend(value)
        elif is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name) for f in fields(value))


def _is_var(node: Any, name: str) -> bool:
    return isinstance(node, pst.Var) and node.name == name


def _ours(entity_type: pst.EntityType) -> str | None:
    return entity_type.basename if entity_type.namespace == (NAMESPACE,) else None


def _item(uid: pst.EntityUid) -> Named | None:
    kind = _ours(uid.type)
    upstream, sep, name = uid.id.partition("/")
    if kind is not None and kind in ITEM_TYPES and sep:
        return kind, upstream, name
    return None


def _resource_scope(scope: Any) -> tuple[str | None, str | None, frozenset[str] | None, bool]:
    """(upstream, type, names, governing) of a policy's resource scope."""
    if isinstance(scope, pst.ScopeAny):
        return None, None, None, False
    if isinstance(scope, pst.ScopeIs):
        return None, _ours(scope.entity_type), None, False
    uid = scope.entity
    if isinstance(uid, pst.Slot):
        raise ValueError("policy templates (?resource) are not supported")
    kind = _ours(scope.entity_type) if isinstance(scope, pst.ScopeIsIn) else None
    item = _item(uid)
    if item is not None:
        return item[1], item[0], frozenset({item[2]}), True
    if _ours(uid.type) == UPSTREAM:
        if isinstance(scope, pst.ScopeEq):
            return uid.id, UPSTREAM, None, True
        return uid.id, kind, None, True
    return None, kind, None, False


def cedar_entry(policy: CedarPolicy) -> Entry:
    node = policy.node
    if isinstance(node.action, pst.ActionEq):
        actions: frozenset[str] | None = frozenset({node.action.entity.id})
    elif isinstance(node.action, pst.ActionIn):
        actions = frozenset(uid.id for uid in node.action.entities)
    else:
        actions = None
    try:
        upstream, rtype, names, governing = _resource_scope(node.resource)
    except ValueError as exc:
        raise ConfigError(f"{policy.location}: {exc}") from None
    args: set[str] = set()
    context: set[str] = set()
    reads_resource = False
    uses = 0  # of the context variable, and below those that read one of its fields
    for sub in _nodes(node.clauses):
        if _is_var(sub, "context"):
            uses += 1
        if isinstance(sub, pst.GetAttr | pst.HasAttr):
            base = sub.base
            attrs = (sub.attr,) if isinstance(sub, pst.GetAttr) else sub.attrs
            if _is_var(base, "resource"):
                reads_resource = True
            elif _is_var(base, "context"):
                uses -= 1
                context.update(attrs)
            if (
                isinstance(base, pst.GetAttr)
                and _is_var(base.base, "context")
                and base.attr in ("args", "args_casefold")
            ):
                args.update(attrs)
    named = frozenset(n for uid in pst.entity_uids(node) if (n := _item(uid)) is not None)
    return Entry(
        text=policy.text,
        rule_id=policy.rule_id,
        location=policy.location,
        effect=node.effect,
        origin="cedar",
        actions=actions,
        upstream=upstream,
        rtype=rtype,
        names=names,
        governing=governing and node.effect == "permit",
        arg_names=frozenset(args),
        reads_resource=reads_resource,
        named=named,
        context=frozenset(context) if uses == 0 else None,
        scopes_read=None if uses or "scopes" in context else frozenset(),
    )


__all__ = ["cedar_entry"]
