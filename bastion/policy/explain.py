"""A readable account of one decision, for ``bastion policy test`` and for people debugging
a policy: what the call asks for, who asks, which policies could apply, what Cedar said (and
whether the native evaluator, which decides slices of YAML rules, agrees), and the final decision
(computed afresh, never from the cache). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bastion.core.attributes import AttributeType, AttributeValue
from bastion.core.records import InboundCall, Principal
from bastion.policy.evaluate import Arguments, Outcome, constrained, declared_attributes, is_machine, item_id
from bastion.policy.schema import ITEM_ACTIONS, UPSTREAM, entity
from bastion.policy.targets import Refused, target

if TYPE_CHECKING:
    from bastion.policy.engine import CedarPolicy


def _value(value: AttributeValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _attributes(principal: Principal, declared: Mapping[str, AttributeType]) -> str:
    used = declared_attributes(principal, declared)
    shown = [f"{k}={_value(v)}" for k, v in principal.attributes if k in used]
    shown += [
        f"{k}={_value(v)} (not declared as such: ignored)" for k, v in principal.attributes if k not in used
    ]
    return ", ".join(shown) or "-"


def _who(principal: Principal, scopes: frozenset[str], declared: Mapping[str, AttributeType]) -> list[str]:
    kind = "Client" if is_machine(principal) else "User"
    lines = [f"principal: {entity(kind, principal.subject)}"]
    if principal.username:
        lines.append(
            f"  username: {principal.username}" + (f" <{principal.email}>" if principal.email else "")
        )
    lines.append(f"  groups: {', '.join(sorted(principal.groups)) or '-'}")
    lines.append(f"  roles: {', '.join(sorted(principal.roles)) or '-'}")
    if declared or principal.attributes:
        lines.append(f"  attributes: {_attributes(principal, declared)}")
    lines.append(f"  client: {principal.client_id or '-'}")
    lines.append(f"  scopes: {' '.join(sorted(principal.scopes)) or '-'}")
    implied = scopes - principal.scopes
    if implied:
        lines.append(f"  implied scopes: {' '.join(sorted(implied))}")
    return lines


def _verdict(outcome: Outcome) -> str:
    by = ", ".join(e.label for e in outcome.reasons) or "no policy matched"
    return f"{'Allow' if outcome.allowed else 'Deny'} ({by})"


def explain(engine: CedarPolicy, principal: Principal, call: InboundCall) -> str:
    lines = [f"request: {call.method or call.http_method}" + (f" {call.name}" if call.name else "")]
    found = target(call)
    if found is None:
        lines.append("decision: ALLOW (protocol message, not subject to policy)")
        return "\n".join(lines)
    if isinstance(found, Refused):
        lines.append(f"decision: DENY (Refused: {found.reason})")
        return "\n".join(lines)
    era = call.era.value
    subject = engine.evaluator.subject(principal, era)
    lines.extend(_who(principal, subject.scopes, engine.compiled.attributes))
    if found.upstream is None:
        lines.append(f"action: {found.action} on every upstream (each upstream's list is filtered)")
        lines.append("decision: ALLOW (lists are filtered per upstream)")
        return "\n".join(lines)
    rtype = ITEM_ACTIONS.get(found.action, UPSTREAM)
    resource = entity(
        rtype, item_id(found.upstream, found.name) if found.name is not None else found.upstream
    )
    lines.append(f"action: {found.action} on {resource}")
    slc = engine.index.slice(found.action, found.upstream, found.name)
    if slc is None:
        lines.append(f"decision: DENY (unknown upstream '{found.upstream}')")
        return "\n".join(lines)
    lines.append(
        f"policies that can apply: {len(slc.rules())} (default for upstream '{found.upstream}': {slc.default}"
        f"{'; covered by an allowing rule, so the default does not apply' if slc.governed else ''})"
    )
    for entry in slc.entries:
        lines.append(f"  {entry.effect} {entry.label}")
    values = constrained(slc.arg_names, found.args)
    args = Arguments(values if isinstance(values, tuple) else ())
    refusal = values if isinstance(values, str) else args.refusal
    if slc.arg_names:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.exact.items()) or "none given"
        lines.append(f"arguments checked: {shown}" + (f" (refused: {refusal})" if refusal else ""))
    if refusal is None:
        outcome = engine.evaluator.evaluate(
            subject, slc, found.upstream, [found.name], args=args.exact, folded=args.folded, cedar=True
        )[0]
        lines.append(f"cedar: {_verdict(outcome)}")
        lines.extend(f"  error: {error}" for error in outcome.errors)
        if engine.evaluator.native_for(slc):
            native = engine.evaluator.evaluate(
                subject, slc, found.upstream, [found.name], args=args.exact, folded=args.folded
            )[0]
            agree = native == outcome
            lines.append(
                "evaluated by: the native evaluator (YAML rules only), "
                + ("which agrees with Cedar" if agree else f"which DISAGREES with Cedar: {_verdict(native)}")
            )
        else:
            lines.append("evaluated by: Cedar")
    decision = engine.decide_target(principal, era, found, cache=False)
    verdict = "ALLOW" if decision.allowed else ("STEP-UP" if decision.step_up else "DENY")
    lines.append(f"decision: {verdict} ({decision.reason})")
    if decision.step_up:
        lines.append(f"  the client is asked to re-authorize with: {' '.join(decision.step_up)}")
    if decision.rule:
        lines.append(f"  rule: {decision.rule}")
    return "\n".join(lines)


__all__ = ["explain"]
