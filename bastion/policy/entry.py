"""A compiled policy: one Cedar policy with what it can apply to, so that the engine can index
it by the actions, upstream and items it may concern (:mod:`bastion.policy.index`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from bastion.policy.canonical import like
from bastion.policy.schema import RESOURCE, like_literal, qualified, quote

Effect = Literal["permit", "forbid"]
Named = tuple[str, str, str]  # (entity type, upstream, name)
DEFAULT_ALLOW_ID = "default:allow"
ARG_FIELDS = frozenset({"args", "args_casefold"})


class Outcome(NamedTuple):
    allowed: bool
    reasons: tuple[Entry, ...]  # the policies that decided (permits when allowed, forbids when denied)
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a policy generated from YAML (or the default) tests, for :mod:`.native`: each part
    is exactly one clause of the Cedar text (empty or None: the clause is absent)."""

    users: frozenset[str] = frozenset()  # user ids or usernames
    emails: frozenset[str] = frozenset()  # the users given as e-mail addresses
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    # (name, values, a set attribute): principal has <name> && the value (a set: any member) in values
    attributes: tuple[tuple[str, frozenset[str | int | bool], bool], ...] = ()
    clients: frozenset[str] | None = None
    scopes: frozenset[str] = frozenset()  # containsAll
    args: tuple[tuple[str, str, bool], ...] = ()  # (name, pattern as emitted, compare casefolded)
    items: frozenset[str] | None = None  # item ids "<upstream>/<name>": [...].contains(resource)
    uris: tuple[str, ...] | None = None  # resource.uri like any of them
    unless_uris: tuple[str, ...] = ()  # the default: unless the resource's uri is like one of them


@dataclass(frozen=True, slots=True)
class Entry:
    """One Cedar policy and what it can apply to (None: anything)."""

    text: str
    rule_id: str
    location: str
    effect: Effect
    origin: Literal["yaml", "cedar", "default"]
    actions: frozenset[str] | None
    upstream: str | None
    rtype: str | None  # Tool, Prompt, McpResource or Upstream
    names: frozenset[str] | None  # tool/prompt names or resource URIs, within upstream
    governing: bool  # an allow-list for what it covers: the default no longer applies there
    require_scopes: tuple[str, ...] = ()
    visible: bool = False
    arg_names: frozenset[str] = frozenset()
    uri_patterns: tuple[str, ...] | None = None
    reads_resource: bool = False  # reads resource attributes: list items are judged one by one
    named: frozenset[Named] = frozenset()
    # the context fields it reads (None: it may read any) and the scopes it tests (None: any);
    # the context sent to Cedar carries only what the slice's policies read (each value costs)
    context: frozenset[str] | None = frozenset()
    scopes_read: frozenset[str] | None = frozenset()
    # while a list is filtered the arguments are unknown: allowing rules drop their argument
    # constraints (listing_text) and denying rules with argument constraints do not apply
    listing_text: str | None = None  # None: the same text
    in_listing: bool = True
    conditions: Conditions | None = None  # None: raw Cedar, only Cedar evaluates it

    def for_listing(self) -> Entry | None:
        """This policy as evaluated while filtering a list (None: it does not apply then)."""
        if not self.in_listing:
            return None
        if self.listing_text is None:
            return self
        context = None if self.context is None else self.context - ARG_FIELDS
        conditions = None if self.conditions is None else replace(self.conditions, args=())
        return replace(
            self,
            text=self.listing_text,
            listing_text=None,
            context=context,
            arg_names=frozenset(),
            conditions=conditions,
        )

    @property
    def reads_time(self) -> bool:
        return self.context is None or "time" in self.context

    @property
    def label(self) -> str:
        return (
            f"'{self.rule_id}' ({self.location})" if self.rule_id != self.location else f"'{self.location}'"
        )

    @property
    def public_label(self) -> str:
        """The rule as a client may hear of it: its id, or file name and line (no server path)."""
        if self.rule_id != self.location:
            return f"'{self.rule_id}'"
        return "'" + self.location.replace("\\", "/").rsplit("/", 1)[-1] + "'"

    def concerns(self, uri: str) -> bool:
        """For resources: whether this policy's URI patterns (if any) match ``uri``."""
        return self.uri_patterns is None or any(like(uri, p) for p in self.uri_patterns)

    def covers(self, action_name: str, upstream: str, rtype: str, name: str | None) -> bool:
        """Whether this policy can apply to ``action_name`` on ``name`` (None: any other item)."""
        if self.actions is not None and action_name not in self.actions:
            return False
        if self.upstream is not None and self.upstream != upstream:
            return False
        if self.rtype is not None and self.rtype != rtype:
            return False
        return self.names is None or (name is not None and name in self.names)


def default_allow(except_uris: tuple[str, ...] = ()) -> Entry:
    """``permit (principal, action, resource);`` for what no allowing rule covers; resources whose
    URI an allowing rule's pattern matches are covered by that rule, so they are left out."""
    text = f"@id({quote(DEFAULT_ALLOW_ID)})\npermit (principal, action, resource)"
    if except_uris:
        likes = " || ".join(f"resource.uri like {like_literal(p)}" for p in except_uris)
        text += f"\nunless {{ resource is {qualified(RESOURCE)} && ({likes}) }}"
    return Entry(
        text=text + ";",
        rule_id=DEFAULT_ALLOW_ID,
        location="policy.default",
        effect="permit",
        origin="default",
        actions=None,
        upstream=None,
        rtype=None,
        names=None,
        governing=False,
        reads_resource=bool(except_uris),
        conditions=Conditions(unless_uris=except_uris),
    )


__all__ = ["DEFAULT_ALLOW_ID", "Conditions", "Effect", "Entry", "Named", "Outcome", "default_allow"]
