"""Slices: the few policies that can apply to one (action, upstream, item), pre-parsed.

Evaluating a Cedar policy set costs time per policy in it, so the engine never evaluates the
whole set. Every item a policy names (``Bastion::Tool::"github/create_issue"``, in a rule's
``tools`` or anywhere in raw Cedar) gets its own slice; every other item of an upstream shares
the upstream's generic slice for that action (policies cannot tell such items apart: tools and
prompts have no attributes). Slices are built once, when the policy is loaded.

Defaults: a slice with no allowing rule that covers it specifically (a rule naming the item, all
items of its kind, or its whole upstream) gets ``permit (principal, action, resource);`` when its
upstream's default is allow. Lists and other calls on the upstream itself are allowed unless a
whole-upstream allowing rule governs them, whatever the default (the items are filtered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cedarpy import PolicySet

from bastion.config.policy import Effect
from bastion.policy.compiler import CompiledPolicy
from bastion.policy.entry import Entry, default_allow
from bastion.policy.native import NativeGroup
from bastion.policy.schema import ACTIONS, ITEM_ACTIONS, UPSTREAM

SliceKey = tuple[str, str, str | None]  # (action, upstream, item name or None for every other item)


@dataclass(frozen=True, slots=True)
class PolicyGroup:
    """The policies of a slice as evaluated for calls, or while filtering a list."""

    entries: tuple[Entry, ...]  # entry i is Cedar's "policy<i>"
    policies: PolicySet | None  # None: nothing to evaluate, see ``fixed``
    fixed: bool | None  # the decision when there is nothing to evaluate
    context: frozenset[str] | None  # the context fields these policies read (None: all)
    native: NativeGroup | None = None  # every policy is from YAML (or the default): decided in Python

    def entry(self, policy_id: str) -> Entry | None:
        index = self.index(policy_id)
        return None if index is None else self.entries[index]

    def index(self, policy_id: str) -> int | None:
        number = policy_id.removeprefix("policy")
        return int(number) if number.isdigit() and int(number) < len(self.entries) else None


@dataclass(frozen=True, slots=True)
class Slice:
    key: SliceKey
    calls: PolicyGroup
    lists: PolicyGroup
    default: Effect  # the upstream's default
    governed: bool  # an allowing rule covers this item: the default does not apply
    arg_names: tuple[str, ...]  # arguments policies here read, sorted (canonical form enforced)
    require_scopes: frozenset[str]  # what the allowing rules here may ask for (step-up)
    cacheable: bool  # no policy here reads context.time
    per_item: bool  # a policy reads resource attributes: list items are judged one by one
    visible: bool  # some rule here keeps denied items in lists
    scopes_read: frozenset[str] | None  # the scopes policies here test (None: any)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.calls.entries

    def rules(self) -> list[Entry]:
        return [e for e in self.calls.entries if e.origin != "default"]


def _union(sets: list[frozenset[str] | None]) -> frozenset[str] | None:
    if any(s is None for s in sets):
        return None
    return frozenset(x for s in sets if s is not None for x in s)


class SliceIndex:
    """Every slice of a compiled policy, keyed by (action, upstream, named item or None)."""

    def __init__(self, compiled: CompiledPolicy, defaults: Mapping[str, Effect]) -> None:
        self.compiled = compiled
        self._slices: dict[SliceKey, Slice] = {}
        parsed: dict[tuple[object, ...], PolicySet] = {}
        number = {id(e): i for i, e in enumerate(compiled.entries)}
        self._listing = {id(e): e.for_listing() for e in compiled.entries}
        for i, e in enumerate(compiled.entries):
            variant = self._listing[id(e)]
            if variant is not None and variant is not e:
                number[id(variant)] = i
        wide = [e for e in compiled.entries if e.names is None]
        specific: dict[tuple[str, str, str], list[Entry]] = {}
        for e in compiled.entries:
            for name in e.names or ():
                for upstream in (e.upstream,) if e.upstream else compiled.upstreams:
                    specific.setdefault((e.rtype or "", upstream, name), []).append(e)
        for upstream in compiled.upstreams:
            default = defaults.get(upstream, "allow")
            for action_name in ACTIONS:
                rtype = ITEM_ACTIONS.get(action_name, UPSTREAM)
                base = [e for e in wide if e.covers(action_name, upstream, rtype, None)]
                self._add((action_name, upstream, None), base, default, parsed, number)
                if rtype == UPSTREAM:
                    continue
                for kind, host, name in compiled.named:
                    if kind == rtype and host == upstream:
                        extra = [
                            e
                            for e in specific.get((kind, host, name), [])
                            if e.covers(action_name, host, kind, name)
                        ]
                        entries = sorted(
                            {id(e): e for e in base + extra}.values(), key=lambda e: number[id(e)]
                        )
                        self._add((action_name, upstream, name), entries, default, parsed, number)

    def _add(
        self,
        key: SliceKey,
        entries: list[Entry],
        default: Effect,
        parsed: dict[tuple[object, ...], PolicySet],
        number: dict[int, int],
    ) -> None:
        # rules with URI patterns govern only the resources they match: the default stays for the rest
        patterns = tuple(p for e in entries if e.governing and e.uri_patterns for p in e.uri_patterns)
        fully = any(e.governing and e.uri_patterns is None for e in entries)
        upstream_level = ITEM_ACTIONS.get(key[0]) is None
        allow_by_default = not fully and (upstream_level or default == "allow")
        rules = list(entries)
        if allow_by_default:
            rules.append(default_allow(patterns))
        listing = [v for e in entries if (v := self._listing[id(e)]) is not None]
        baseline = rules[len(entries) :]
        self._slices[key] = Slice(
            key=key,
            calls=self._group(entries, baseline, key, parsed=parsed, number=number, mode="calls"),
            lists=self._group(listing, baseline, key, parsed=parsed, number=number, mode="lists"),
            default=default,
            governed=fully or bool(patterns),
            arg_names=tuple(sorted({a for e in entries for a in e.arg_names})),
            require_scopes=frozenset(s for e in entries if e.effect == "permit" for s in e.require_scopes),
            cacheable=not any(e.reads_time for e in entries),
            per_item=any(e.reads_resource and e.origin == "cedar" for e in entries),
            visible=any(e.visible for e in entries),
            scopes_read=_union([e.scopes_read for e in entries]),
        )

    @staticmethod
    def _group(
        entries: list[Entry],
        baseline: list[Entry],
        key: SliceKey,
        *,
        parsed: dict[tuple[object, ...], PolicySet],
        number: dict[int, int],
        mode: str,
    ) -> PolicyGroup:
        rules = (*entries, *baseline)
        if not entries:  # nothing but the default: no need to ask Cedar
            return PolicyGroup(rules, None, bool(baseline), frozenset())
        ids = (mode, *(number[id(e)] for e in entries), len(baseline))  # the baseline follows from them
        if ids not in parsed:
            parsed[ids] = PolicySet.from_str("\n".join(e.text for e in rules))
        native = NativeGroup(rules, key[0], key[1]) if NativeGroup.supports(rules) else None
        return PolicyGroup(rules, parsed[ids], None, _union([e.context for e in rules]), native)

    def slice(self, action_name: str, upstream: str, name: str | None) -> Slice | None:
        """The slice for an item (its own if a policy names it); None for an unknown upstream."""
        if name is not None:
            found = self._slices.get((action_name, upstream, name))
            if found is not None:
                return found
        return self._slices.get((action_name, upstream, None))

    def named(self, action_name: str, upstream: str, name: str) -> bool:
        return (action_name, upstream, name) in self._slices

    def __len__(self) -> int:
        return len(self._slices)


__all__ = ["PolicyGroup", "Slice", "SliceIndex", "SliceKey"]
