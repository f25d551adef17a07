"""The Cedar policy engine: (Principal, InboundCall) → Decision, pure and synchronous.

For each call the engine finds the slice of policies that can apply (:mod:`.index`), refuses
constrained arguments that are not canonical (:mod:`.canonical`), and evaluates the slice with
the principal, the token's scopes (hierarchy expanded) and the arguments as context. When the
slice refuses only for want of scopes that an allowing rule asks for, the Decision is a step-up
(``step_up`` = every scope those rules need, plus the token's scopes they mention). Lists are
allowed and carry a filter (:mod:`.lists`). Decisions are cached, keyed by everything they
depend on; an engine never changes (a reload builds a new one, with an empty cache).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bastion.config.model import Settings
from bastion.config.policy import PolicySettings
from bastion.core.records import Decision, InboundCall, Principal
from bastion.policy.compiler import CompiledPolicy, compile_sources
from bastion.policy.entry import DEFAULT_ALLOW_ID, Entry
from bastion.policy.evaluate import Arguments, Clock, Evaluator, Outcome, Subject, attribute_key, constrained
from bastion.policy.explain import explain
from bastion.policy.index import Slice, SliceIndex
from bastion.policy.lists import PolicyLists, item_visibility
from bastion.policy.source import load_sources
from bastion.policy.targets import Refused, Target, target

log = logging.getLogger("bastion.policy")
PLUMBING = Decision(allowed=True, reason="protocol message (not subject to policy)")
_MAX_LISTED = 3


def _labels(entries: tuple[Entry, ...] | list[Entry]) -> str:
    return ", ".join(e.public_label for e in entries[:_MAX_LISTED]) + (
        " and more" if len(entries) > _MAX_LISTED else ""
    )


def _ids(entries: tuple[Entry, ...] | list[Entry]) -> str:
    return ",".join(dict.fromkeys(e.rule_id for e in entries))


class CedarPolicy:
    def __init__(
        self,
        compiled: CompiledPolicy,
        settings: PolicySettings,
        *,
        clock: Clock = time.time,
        native: bool = True,
    ) -> None:
        defaults = {u: settings.upstreams.get(u, settings.default) for u in compiled.upstreams}
        self.compiled = compiled
        self.index = SliceIndex(compiled, defaults)
        self.evaluator = Evaluator(
            settings.scope_implies, clock=clock, native=native, attributes=compiled.attributes
        )
        self._cache_size = settings.cache_size
        self._cache: dict[tuple[object, ...], Decision] = {}
        self._lists: dict[tuple[object, ...], bool] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        base_dir: Path | None = None,
        clock: Clock = time.time,
        native: bool = True,
    ) -> CedarPolicy:
        """Load, compile and validate every policy source; ConfigError names the file and line.
        ``native=False``: Cedar evaluates every slice (the reference the native evaluator matches)."""
        sources = load_sources(settings, base_dir=base_dir)
        compiled = compile_sources(sources, [u.name for u in settings.upstreams])
        return cls(compiled, settings.policy, clock=clock, native=native)

    # -- the stage ------------------------------------------------------------------------------

    def decide(self, principal: Principal, call: InboundCall) -> Decision:
        found = target(call)
        if found is None:
            return PLUMBING
        if isinstance(found, Refused):
            return Decision(allowed=False, reason=f"Refused: {found.reason}", rule="policy:unroutable")
        return self.decide_target(principal, call.era.value, found)

    def decide_target(self, principal: Principal, era: str, tgt: Target, *, cache: bool = True) -> Decision:
        if tgt.upstream is None:  # a list on the aggregate endpoint: judged per upstream
            return Decision(
                allowed=True,
                reason="lists are filtered per upstream",
                lists=PolicyLists(self, principal, era),
            )
        slc = self.index.slice(tgt.action, tgt.upstream, tgt.name)
        if slc is None:
            return Decision(
                allowed=False, reason=f"Refused: unknown upstream '{tgt.upstream}'", rule="policy:unroutable"
            )
        values = constrained(slc.arg_names, tgt.args)
        if isinstance(values, str):
            return Decision(allowed=False, reason=f"Refused: {values}", rule="policy:canonical-form")
        key: tuple[object, ...] | None = None
        if cache and slc.cacheable and self._cache_size:
            named = tgt.name if slc.key[2] is not None or tgt.action == "read_resource" else None
            key = (
                *_principal_key(principal),
                era,
                tgt.action,
                tgt.upstream,
                named,
                values,
            )
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        args = Arguments(values)
        if args.refusal is not None:
            decision = Decision(
                allowed=False, reason=f"Refused: {args.refusal}", rule="policy:canonical-form"
            )
        else:
            decision = self._judge(self.evaluator.subject(principal, era), slc, tgt, args)
        if decision.allowed and tgt.name is None and tgt.action.startswith("list_"):
            decision = Decision(True, decision.reason, decision.rule, lists=PolicyLists(self, principal, era))
        elif decision.allowed and slc.arg_names:
            decision = replace(decision, canonical_body=True)
        if key is not None:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[key] = decision
        return decision

    def _judge(self, subject: Subject, slc: Slice, tgt: Target, args: Arguments) -> Decision:
        assert tgt.upstream is not None
        outcome = self._one(subject, slc, tgt.upstream, tgt.name, args)
        if outcome.errors:
            log.warning("policy evaluation errors for %s: %s", slc.key, "; ".join(outcome.errors))
            return Decision(
                allowed=False, reason="Refused: the policy could not be evaluated", rule="policy:error"
            )
        if outcome.allowed:
            if all(e.origin == "default" for e in outcome.reasons):
                return Decision(
                    allowed=True, reason="allowed by default (no rule covers this)", rule=DEFAULT_ALLOW_ID
                )
            return Decision(
                allowed=True, reason=f"allowed by {_labels(outcome.reasons)}", rule=_ids(outcome.reasons)
            )
        forbids = [e for e in outcome.reasons if e.effect == "forbid"]
        if forbids:
            return Decision(
                allowed=False, reason=f"Denied by policy rule {forbids[0].public_label}", rule=_ids(forbids)
            )
        step_up = self._step_up(subject, slc, tgt.upstream, tgt.name, args)
        if step_up is not None:
            return step_up
        return self._no_permit(subject, slc, tgt, args)

    def _one(
        self, subject: Subject, slc: Slice, upstream: str, name: str | None, args: Arguments, **kw: Any
    ) -> Outcome:
        return self.evaluator.evaluate(
            subject, slc, upstream, [name], args=args.exact, folded=args.folded, **kw
        )[0]

    def _step_up(
        self, subject: Subject, slc: Slice, upstream: str, name: str | None, args: Arguments
    ) -> Decision | None:
        if not slc.require_scopes - subject.scopes:
            return None
        retry = self._one(subject, slc, upstream, name, args, extra_scopes=slc.require_scopes)
        if not retry.allowed or retry.errors:
            return None
        permits = [e for e in retry.reasons if e.effect == "permit"]
        needed = {s for e in permits for s in e.require_scopes}
        relevant = {s for s in subject.scopes if s in slc.require_scopes}
        scopes = tuple(sorted(needed | relevant))
        return Decision(
            allowed=False,
            reason=f"Rule {_labels(permits)} needs scopes {' '.join(scopes)}",
            rule=_ids(permits),
            step_up=scopes,
        )

    def _no_permit(self, subject: Subject, slc: Slice, tgt: Target, args: Arguments) -> Decision:
        assert tgt.upstream is not None
        uri = tgt.name if tgt.action == "read_resource" and tgt.name is not None else None
        rules = [e for e in slc.rules() if e.effect == "permit" and (uri is None or e.concerns(uri))]
        if args.exact and rules:
            loose = self._one(subject, slc, tgt.upstream, tgt.name, args, listing=True)
            if loose.allowed and not loose.errors:
                names = ", ".join(args.exact)
                return Decision(
                    allowed=False,
                    reason=f"Denied: rule {_labels(loose.reasons)} does not allow these arguments ({names})",
                    rule=_ids(loose.reasons),
                )
        if not any(e.governing for e in rules) and slc.default == "deny":
            return Decision(
                allowed=False,
                reason=f"Denied: no policy rule allows this (default deny for upstream '{tgt.upstream}')",
                rule="policy:default-deny",
            )
        return Decision(
            allowed=False,
            reason=f"Denied: no policy rule allows this for you (rules for it: {_labels(rules)})"
            if rules
            else "Denied: no policy rule allows this",
            rule="policy:no-match",
        )

    # -- lists ----------------------------------------------------------------------------------

    def visible_items(
        self, principal: Principal, era: str, upstream: str, kind: str, names: list[str]
    ) -> set[str]:
        return item_visibility(self, principal, era, upstream=upstream, kind=kind, names=names)

    def list_cache_get(
        self, principal: Principal, era: str, upstream: str, groups: Iterable[tuple[object, ...]]
    ) -> dict[tuple[object, ...], bool]:
        if not self._cache_size:
            return {}
        prefix = (*_principal_key(principal), era, upstream)
        found = {key: self._lists.get((*prefix, key)) for key in groups}
        return {key: value for key, value in found.items() if value is not None}

    def list_cache_put(
        self,
        principal: Principal,
        era: str,
        upstream: str,
        answers: Mapping[tuple[object, ...], bool],
        *,
        cacheable: bool,
    ) -> None:
        if not self._cache_size or not cacheable:
            return
        prefix = (*_principal_key(principal), era, upstream)
        for key, value in answers.items():
            if len(self._lists) >= self._cache_size:
                self._lists.pop(next(iter(self._lists)))
            self._lists[(*prefix, key)] = value

    # -- explain --------------------------------------------------------------------------------

    def explain(self, principal: Principal, call: InboundCall) -> str:
        """Why the engine decides what it decides about ``call`` (for ``bastion policy test``)."""
        return explain(self, principal, call)


def _principal_key(principal: Principal) -> tuple[object, ...]:
    return (
        principal.subject,
        principal.client_id,
        principal.scopes,
        principal.groups,
        principal.roles,
        principal.username,
        principal.email,
        principal.authenticated,
        attribute_key(principal.attributes),
    )


__all__ = ["PLUMBING", "CedarPolicy"]
