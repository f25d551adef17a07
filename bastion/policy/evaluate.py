"""One Cedar evaluation: a principal, an action, an item of an upstream, over one slice.

The principal's entity (a ``User`` in its groups, with its declared attributes, or a ``Client``
for a client-credentials token) is parsed once and kept in a small bounded cache; each
evaluation adds only the item's entity to it. The context is built as JSON text once per
evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cedarpy
import orjson
from cedarpy import Entities, PolicySet

from bastion.core.attributes import AttributeType, AttributeValue, conforms
from bastion.core.records import Principal
from bastion.policy import canonical
from bastion.policy.entry import Outcome
from bastion.policy.index import PolicyGroup, Slice
from bastion.policy.native import Facts
from bastion.policy.schema import CLIENT, GROUP, ITEM_ACTIONS, RESOURCE, UPSTREAM, USER, qualified

Clock = Callable[[], float]
ACTION_TYPE = qualified("Action")
_UPSTREAM_TYPE = qualified(UPSTREAM)


@dataclass(frozen=True, slots=True)
class Subject:
    """A principal as Cedar sees it, for one era."""

    key: tuple[object, ...]
    uid: dict[str, str]
    entities: Entities
    scopes: frozenset[str]  # hierarchy expanded
    client: str
    era: str
    facts: Facts  # the same principal for the native evaluator


Verdict = tuple[bool, tuple[str, ...], tuple[str, ...]]  # allowed, policy ids, errors


def _public_batch(requests: list[dict[str, Any]], policies: PolicySet, entities: Entities) -> list[Verdict]:
    results = cedarpy.is_authorized_batch(requests, policies, entities)
    return [(r.allowed, tuple(r.diagnostics.reasons), tuple(r.diagnostics.errors)) for r in results]


def _direct_batch(requests: list[dict[str, Any]], policies: PolicySet, entities: Entities) -> list[Verdict]:
    # cedarpy's public wrapper adds ~20-30 µs per call here (stdlib json, result objects): call the
    # extension it wraps directly. tests/unit/test_policy_engine.py checks both give the same verdicts.
    out: list[Verdict] = []
    for text in _internal.is_authorized_batch(requests, policies, entities._inner, None, False):
        result = orjson.loads(text)
        diagnostics = result.get("diagnostics") or {}
        verdict = result.get("decision") == "Allow"
        out.append((verdict, tuple(diagnostics.get("reason", ())), tuple(diagnostics.get("errors", ()))))
    return out


try:
    from cedarpy import _internal

    authorize_batch = (
        _direct_batch if callable(getattr(_internal, "is_authorized_batch", None)) else _public_batch
    )
except ImportError:  # pragma: no cover - a cedarpy without its usual extension layout
    authorize_batch = _public_batch


def expand(scopes: frozenset[str], implies: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The scopes plus every scope they imply, transitively (``crm:write`` ⊇ ``crm:read``)."""
    out, todo = set(scopes), list(scopes)
    while todo:
        for implied in implies.get(todo.pop(), ()):
            if implied not in out:
                out.add(implied)
                todo.append(implied)
    return frozenset(out)


def is_machine(principal: Principal) -> bool:
    """A client-credentials token: the client acts for itself (its subject is its client id)."""
    return principal.authenticated and principal.username is None and principal.subject == principal.client_id


def item_id(upstream: str, name: str) -> str:
    return f"{upstream}/{name}"


def item_entity(rtype: str, upstream: str, name: str | None) -> dict[str, Any]:
    if name is None:  # the upstream itself
        return {"uid": {"type": _UPSTREAM_TYPE, "id": upstream}, "attrs": {}, "parents": []}
    return {
        "uid": {"type": qualified(rtype), "id": item_id(upstream, name)},
        "attrs": {"uri": name} if rtype == RESOURCE else {},
        "parents": [{"type": _UPSTREAM_TYPE, "id": upstream}],
    }


def constrained(names: tuple[str, ...], args: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | str:
    """The call's values of the arguments policies constrain, or why they cannot be checked."""
    if not names:
        return ()
    out = []
    for name in names:
        if name in args:
            value = args[name]
            if not isinstance(value, str):
                return f"argument '{name}' must be a string to be checked by policy"
            out.append((name, value))
    return tuple(out)


class Arguments:
    """Constrained argument values in canonical form (exact and case-folded), or why refused."""

    __slots__ = ("exact", "folded", "refusal")

    def __init__(self, values: tuple[tuple[str, str], ...]) -> None:
        self.exact: dict[str, str] = {}
        self.folded: dict[str, str] = {}
        self.refusal: str | None = None
        for name, value in values:
            problem = canonical.problem(value)
            if problem is not None:
                self.refusal = f"argument '{name}' {problem}"
                break
            self.exact[name] = value
            self.folded[name] = canonical.fold(value)


def attribute_key(attributes: tuple[tuple[str, AttributeValue], ...]) -> tuple[object, ...]:
    """The principal's attributes as part of a cache key: with their types, since ``True == 1``
    in Python while Cedar tells a Bool from a Long."""
    return tuple((name, type(value), value) for name, value in attributes) if attributes else ()


def declared_attributes(
    principal: Principal, declared: Mapping[str, AttributeType]
) -> dict[str, AttributeValue]:
    """The principal's attributes that ``policy.user_attributes`` declares with their type (a
    token issued before a declaration changed may carry others: they are left out)."""
    return {
        name: value
        for name, value in principal.attributes
        if (kind := declared.get(name)) is not None and conforms(value, kind)
    }


class Evaluator:
    def __init__(
        self,
        scope_implies: Mapping[str, Sequence[str]],
        *,
        clock: Clock = time.time,
        cache_size: int = 1024,
        native: bool = True,
        attributes: Mapping[str, AttributeType] | None = None,
    ) -> None:
        self.native = native  # False: Cedar evaluates every slice (the reference)
        self._declared = dict(attributes or {})  # policy.user_attributes
        self._implies = {k: tuple(v) for k, v in scope_implies.items()}
        self._clock = clock
        self._cache_size = cache_size
        self._entities: dict[tuple[object, ...], tuple[dict[str, str], Entities, Facts]] = {}
        self._with_item: dict[tuple[object, ...], Entities] = {}  # principal + one item
        self._scopes: dict[frozenset[str], frozenset[str]] = {}

    def scopes(self, scopes: frozenset[str]) -> frozenset[str]:
        found = self._scopes.get(scopes)
        if found is None:
            found = expand(scopes, self._implies) if self._implies else scopes
            if len(self._scopes) >= self._cache_size:
                self._scopes.pop(next(iter(self._scopes)))
            self._scopes[scopes] = found
        return found

    def subject(self, principal: Principal, era: str) -> Subject:
        machine = is_machine(principal)
        key = (
            machine,
            principal.subject,
            principal.username,
            principal.email,
            principal.groups,
            principal.roles,
            attribute_key(principal.attributes),
        )
        cached = self._entities.get(key)
        if cached is None:
            attributes = {} if machine else declared_attributes(principal, self._declared)
            if machine:
                uid = {"type": qualified(CLIENT), "id": principal.subject}
                entity: dict[str, Any] = {"uid": uid, "attrs": {}, "parents": []}
            else:
                uid = {"type": qualified(USER), "id": principal.subject}
                attrs: dict[str, Any] = {
                    "username": principal.username or "",
                    "roles": sorted(principal.roles),
                }
                if principal.email is not None:
                    attrs["email"] = principal.email
                for name, value in attributes.items():  # a set: a JSON array
                    attrs[name] = list(value) if isinstance(value, tuple) else value
                parents = [{"type": qualified(GROUP), "id": g} for g in sorted(principal.groups)]
                entity = {"uid": uid, "attrs": attrs, "parents": parents}
            facts = Facts(
                machine,
                principal.subject,
                principal.username or "",
                principal.email,
                principal.groups,
                principal.roles,
                principal.client_id or "",
                attributes,
            )
            cached = (uid, Entities.from_json_str(orjson.dumps([entity]).decode()), facts)
            if len(self._entities) >= self._cache_size:
                self._entities.pop(next(iter(self._entities)))
            self._entities[key] = cached
        client = principal.client_id or ""
        facts = cached[2] if cached[2].client == client else replace(cached[2], client=client)
        return Subject(key, cached[0], cached[1], self.scopes(principal.scopes), client, era, facts)

    def _context(
        self,
        subject: Subject,
        slc: Slice,
        group: PolicyGroup,
        args: Mapping[str, str],
        folded: Mapping[str, str],
        *,
        listing: bool,
        extra_scopes: frozenset[str],
    ) -> str:
        """Only what the slice's policies read: Cedar parses every value it is given (~4 µs each)."""
        fields = group.context
        context: dict[str, Any] = {}
        if fields is None or "scopes" in fields:
            scopes = subject.scopes | extra_scopes if extra_scopes else subject.scopes
            if slc.scopes_read is not None:
                scopes = scopes & slc.scopes_read
            context["scopes"] = sorted(scopes)
        if fields is None or "client" in fields:
            context["client"] = subject.client
        if fields is None or "era" in fields:
            context["era"] = subject.era
        if fields is None or "time" in fields:
            context["time"] = int(self._clock())
        if fields is None or "listing" in fields:
            context["listing"] = listing
        if fields is None or "args" in fields:
            context["args"] = args
        if fields is None or "args_casefold" in fields:
            context["args_casefold"] = folded
        return orjson.dumps(context).decode()

    def _entities_for(
        self, subject: Subject, rtype: str, upstream: str, items: dict[str | None, dict[str, Any]]
    ) -> Entities:
        if len(items) != 1:
            return subject.entities.with_added_json_str(orjson.dumps(list(items.values())).decode())
        name, item = next(iter(items.items()))
        key = (subject.key, rtype, upstream, name)
        found = self._with_item.get(key)
        if found is None:
            found = subject.entities.with_added_json_str(orjson.dumps([item]).decode())
            if len(self._with_item) >= self._cache_size * 4:
                self._with_item.pop(next(iter(self._with_item)))
            self._with_item[key] = found
        return found

    def evaluate(
        self,
        subject: Subject,
        slc: Slice,
        upstream: str,
        names: Sequence[str | None],
        *,
        args: Mapping[str, str] | None = None,
        folded: Mapping[str, str] | None = None,
        listing: bool = False,
        extra_scopes: frozenset[str] = frozenset(),
        cedar: bool = False,
    ) -> list[Outcome]:
        """One outcome per name (None: the upstream itself), in one batch over the slice; by the
        native evaluator when it can (see :meth:`native_for`), else (or with ``cedar``) by Cedar."""
        group = slc.lists if listing else slc.calls
        if group.policies is None:
            fixed = Outcome(bool(group.fixed), group.entries[-1:] if group.fixed else ())
            return [fixed for _ in names]
        if group.native is not None and self.native and not cedar:
            scopes = subject.scopes | extra_scopes if extra_scopes else subject.scopes
            return group.native.evaluate(subject.facts, scopes, upstream, names, args or {}, folded or {})
        action_name = slc.key[0]
        rtype = ITEM_ACTIONS.get(action_name, UPSTREAM)
        context = self._context(
            subject, slc, group, args or {}, folded or {}, listing=listing, extra_scopes=extra_scopes
        )
        items = {n: item_entity(rtype, upstream, n) for n in names}
        entities = self._entities_for(subject, rtype, upstream, items)
        action_uid = {"type": ACTION_TYPE, "id": action_name}
        requests = [
            {"principal": subject.uid, "action": action_uid, "resource": items[n]["uid"], "context": context}
            for n in names
        ]
        out = []
        entries = group.entries
        for allowed, reasons, errors in authorize_batch(requests, group.policies, entities):
            # Cedar reports the deciding policies in no particular order: give them in policy order
            numbers = sorted(n for n in map(group.index, reasons) if n is not None)
            found = tuple(entries[n] for n in numbers)
            out.append(Outcome(allowed, found, errors))
        return out

    def native_for(self, slc: Slice, *, listing: bool = False) -> bool:
        """Whether the native evaluator decides this slice (else Cedar, or nothing to evaluate)."""
        group = slc.lists if listing else slc.calls
        return self.native and group.policies is not None and group.native is not None


__all__ = [
    "Arguments",
    "Evaluator",
    "Outcome",
    "Subject",
    "attribute_key",
    "constrained",
    "declared_attributes",
    "expand",
    "is_machine",
    "item_entity",
    "item_id",
]
