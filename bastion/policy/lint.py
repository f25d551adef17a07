"""``bastion policy lint``: YAML rules that can never match, found without running anything.

Two kinds of findings, both warnings (the policy is valid, but probably not what was meant):

- **names nobody has**: a group that no identity provider grant produces and no user in the
  store holds, a user the store does not know, a client that is neither configured nor
  registered (client ids that are URLs are metadata documents, fetched on first use, so they
  are not flagged), a role no user in the store has while no identity provider reads a roles
  claim, an attribute value no user in the store has while no identity provider maps that
  attribute (``claims.attributes``). Users, groups, roles and attributes may appear later (a
  first sign-in through an identity provider, ``bastion users add``), so these *may* never match.
- **shadowed rules**: a rule that an unconditional deny (a deny rule without ``args``) on the
  same or a broader target, naming everyone the rule names, already decides. An allowing rule
  under such a deny can never allow anything; a later deny under it adds nothing.

Raw Cedar policies are not analysed here (the schema validation at load still applies to them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.config.policy import ANY, PolicyRule, Who
from bastion.policy.source import YamlRule


@dataclass(frozen=True, slots=True)
class Known:
    """Who can appear in a token: what the configuration and the store say."""

    granted_groups: frozenset[str]  # identity_providers[].grants[].groups
    user_groups: frozenset[str]  # groups of users in the store
    users: frozenset[str]  # usernames, e-mail addresses and user ids in the store
    clients: frozenset[str]  # configured and registered client ids
    roles: frozenset[str] = frozenset()  # roles of users in the store (IdP roles, or set by an admin)
    idp_roles: bool = False  # an identity provider reads a roles claim: new roles may appear
    # (attribute, value) of users in the store, typed as declared (a set: each of its members)
    attribute_values: frozenset[tuple[str, str | int | bool]] = frozenset()
    idp_attributes: frozenset[str] = frozenset()  # attributes an identity provider maps


@dataclass(frozen=True, slots=True)
class Finding:
    location: str
    rule_id: str
    message: str

    def __str__(self) -> str:
        where = self.location if self.rule_id == self.location else f"{self.location} ('{self.rule_id}')"
        return f"{where}: {self.message}"


def _names(rule: PolicyRule, known: Known) -> list[str]:
    who = rule.deny if rule.deny is not None else rule.allow
    if who is None:
        return []
    part = "deny" if rule.deny is not None else "allow"
    out: list[str] = []
    groups = known.granted_groups | known.user_groups
    for group in who.groups:
        if group not in groups:
            out.append(
                f"{part}.groups: no identity provider grant produces group '{group}' and no user in "
                "the store has it: may never match"
            )
    for user in who.users:
        if user not in known.users and user.casefold() not in known.users:
            out.append(f"{part}.users: no user '{user}' in the store (yet): may never match")
    for role in who.roles:
        if role not in known.roles and not known.idp_roles:
            out.append(
                f"{part}.roles: no user in the store has role '{role}' and no identity provider "
                "reads a roles claim: may never match"
            )
    for name, values in sorted(who.attributes.items()):
        for value in values:
            if (name, value) not in known.attribute_values and name not in known.idp_attributes:
                out.append(
                    f"{part}.attributes.{name}: no user in the store has {name} {value!r} and no identity "
                    "provider maps it: may never match"
                )
    for client in who.clients:
        if client not in known.clients and not client.startswith("https://"):
            out.append(
                f"{part}.clients: client '{client}' is neither configured (clients:) nor registered: "
                "may never match"
            )
    return out


def _kinds(rule: PolicyRule) -> dict[str, list[str]]:
    kinds = {"tools": rule.tools, "prompts": rule.prompts, "resources": rule.resources}
    return {k: v for k, v in kinds.items() if v is not None}


def covers_target(broad: PolicyRule, rule: PolicyRule) -> bool:
    """Whether every item ``rule`` is about is also an item ``broad`` is about."""
    if broad.upstream not in (ANY, rule.upstream):
        return False
    wide, narrow = _kinds(broad), _kinds(rule)
    if not wide:  # the whole upstream (or every upstream)
        return True
    if not narrow:
        return False
    for kind, names in narrow.items():
        covering = wide.get(kind)
        if covering is None:
            return False
        if covering != [ANY] and (names == [ANY] or not set(names) <= set(covering)):
            return False
    return True


def covers_who(deny: Who, who: Who | None) -> bool:
    """Whether ``deny`` names everyone ``who`` names (None: everyone)."""
    if who is None:  # a rule about everyone: a deny always names someone
        return False
    if deny.users or deny.groups or deny.roles:
        if not (who.users or who.groups or who.roles):
            return False
        pairs = ((who.users, deny.users), (who.groups, deny.groups), (who.roles, deny.roles))
        if not all(set(mine) <= set(theirs) for mine, theirs in pairs):
            return False
    # every value ``who`` admits for each attribute ``deny`` tests is one ``deny`` refuses (for a
    # set attribute too: a member among who's values is then among deny's)
    if any(
        name not in who.attributes or not set(who.attributes[name]) <= set(values)
        for name, values in deny.attributes.items()
    ):
        return False
    return not deny.clients or (bool(who.clients) and set(who.clients) <= set(deny.clients))


def _shadowed(rules: Sequence[YamlRule]) -> list[Finding]:
    out: list[Finding] = []
    for i, item in enumerate(rules):
        rule = item.rule
        who = rule.deny if rule.deny is not None else rule.allow
        for j, other in enumerate(rules):
            deny = other.rule.deny
            if j == i or deny is None or other.rule.args:
                continue
            if rule.deny is not None and j > i:  # of two equivalent denies, the later one is flagged
                continue
            if covers_target(other.rule, rule) and covers_who(deny, who):
                what = (
                    "adds nothing: deny rule {} already refuses everything it refuses"
                    if rule.deny is not None
                    else "can never allow anything: deny rule {} refuses everyone it names, on the same "
                    "or a broader target"
                )
                out.append(Finding(item.location, item.rule_id, what.format(_label(other))))
                break
    return out


def _label(item: YamlRule) -> str:
    return item.location if item.rule_id == item.location else f"'{item.rule_id}' ({item.location})"


def lint(rules: Sequence[YamlRule], known: Known) -> list[Finding]:
    findings = [Finding(r.location, r.rule_id, m) for r in rules for m in _names(r.rule, known)]
    return findings + _shadowed(rules)


__all__ = ["Finding", "Known", "covers_target", "covers_who", "lint"]
