"""Filtered lists: which tools, prompts and resources one principal sees.

An item stays in a list when its call would be allowed, or would be allowed after a step-up
(so the client can call it and get the 403 challenge), or when a rule that covers it says
``visibility: visible``. Arguments are unknown while listing: ``context.listing`` is true,
allowing rules ignore their argument constraints and denying rules with argument constraints
do not apply.

Items that no policy tells apart (every tool of an upstream that no policy names) share one
evaluation; named items and resources matched by different patterns are judged per group,
all groups of one slice in one ``is_authorized_batch``. Results are cached with the decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.records import Principal
from bastion.policy.evaluate import Outcome, Subject
from bastion.policy.index import Slice
from bastion.policy.targets import KIND_LIST_ACTION, Target

if TYPE_CHECKING:
    from bastion.policy.engine import CedarPolicy

JsonObject = dict[str, Any]
KIND_ITEM = {
    "tools": ("call_tool", "name"),
    "prompts": ("get_prompt", "name"),
    "resources": ("read_resource", "uri"),
    "resourceTemplates": ("read_resource", "uriTemplate"),
}


class PolicyLists:
    """The ``ListFilter`` of one principal's list call."""

    __slots__ = ("_engine", "_era", "_principal")

    def __init__(self, engine: CedarPolicy, principal: Principal, era: str) -> None:
        self._engine = engine
        self._principal = principal
        self._era = era

    def required_scopes(self, upstream: str, tool: str) -> tuple[str, ...]:
        """The scopes the rules covering ``tool`` ask for (for the #234 tool annotation)."""
        slc = self._engine.index.slice("call_tool", upstream, tool)
        return tuple(sorted(slc.require_scopes)) if slc is not None else ()

    def visible(self, upstream: str, kind: str, items: list[JsonObject]) -> list[JsonObject]:
        spec = KIND_ITEM.get(kind)
        if spec is None:
            return []
        field = spec[1]
        names = [item.get(field) for item in items]
        shown = self._engine.visible_items(
            self._principal, self._era, upstream, kind, [n for n in names if isinstance(n, str)]
        )
        return [
            item for item, name in zip(items, names, strict=True) if isinstance(name, str) and name in shown
        ]


def _group(slc: Slice, action_name: str, name: str) -> object:
    """Items with the same group get the same answer from the slice."""
    if slc.key[2] is not None or slc.per_item:
        return name
    if action_name == "read_resource":
        return tuple(i for i, e in enumerate(slc.entries) if e.uri_patterns and e.concerns(name))
    return None


def _visible_when_denied(slc: Slice, action_name: str, name: str) -> bool:
    if action_name != "read_resource":
        return slc.visible
    return any(e.visible and e.concerns(name) for e in slc.entries)


def _shown(outcome: Outcome) -> bool | None:
    """True: allowed; False: an evaluation error (hidden); None: refused (visibility decides)."""
    if outcome.errors:
        return False
    return True if outcome.allowed else None


def _no_forbid(outcome: Outcome) -> bool:
    return not any(e.effect == "forbid" for e in outcome.reasons)


def item_visibility(
    engine: CedarPolicy, principal: Principal, era: str, *, upstream: str, kind: str, names: list[str]
) -> set[str]:
    """The names (of ``kind`` items of ``upstream``) this principal sees."""
    listing = engine.decide_target(principal, era, Target(KIND_LIST_ACTION[kind], upstream, None, {}))
    if not listing.allowed:
        return set()
    action_name = KIND_ITEM[kind][0]
    groups: dict[tuple[object, ...], list[str]] = {}
    slices: dict[tuple[object, ...], Slice] = {}
    for name in names:
        slc = engine.index.slice(action_name, upstream, name)
        if slc is None:
            continue
        group: tuple[object, ...] = (slc.key, _group(slc, action_name, name))
        groups.setdefault(group, []).append(name)
        slices[group] = slc
    answers = engine.list_cache_get(principal, era, upstream, groups)
    pending = [k for k in groups if k not in answers]
    if pending:
        subject = engine.evaluator.subject(principal, era)
        by_slice: dict[object, list[tuple[object, ...]]] = {}
        for key in pending:
            by_slice.setdefault(slices[key].key, []).append(key)
        for keys in by_slice.values():
            slc = slices[keys[0]]
            firsts = [(k, groups[k][0]) for k in keys]
            fresh = _judge_groups(engine, subject, slc, upstream=upstream, groups=firsts)
            answers.update(fresh)
            engine.list_cache_put(principal, era, upstream, fresh, cacheable=slc.cacheable)
    return {name for key, members in groups.items() if answers.get(key) for name in members}


def _judge_groups(
    engine: CedarPolicy,
    subject: Subject,
    slc: Slice,
    *,
    upstream: str,
    groups: list[tuple[tuple[object, ...], str]],
) -> dict[tuple[object, ...], bool]:
    action_name = slc.key[0]
    evaluate = engine.evaluator.evaluate
    outcomes = evaluate(subject, slc, upstream, [n for _, n in groups], listing=True)
    answers = {key: _shown(o) for (key, _), o in zip(groups, outcomes, strict=True)}
    undecided = [
        (k, n) for (k, n), o in zip(groups, outcomes, strict=True) if answers[k] is None and _no_forbid(o)
    ]
    if undecided and slc.require_scopes - subject.scopes:
        retry = evaluate(
            subject, slc, upstream, [n for _, n in undecided], listing=True, extra_scopes=slc.require_scopes
        )
        for (key, _), outcome in zip(undecided, retry, strict=True):
            if outcome.allowed and not outcome.errors:
                answers[key] = True
    return {
        key: bool(answers[key]) or (answers[key] is None and _visible_when_denied(slc, action_name, name))
        for key, name in groups
    }


__all__ = ["KIND_ITEM", "PolicyLists", "item_visibility"]
