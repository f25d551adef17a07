"""``policies:`` and ``policy:`` in bastion.yaml: who may use which tool, prompt and resource.

Each rule is YAML sugar for one Cedar ``permit`` (a rule with ``allow``, or with neither
``allow`` nor ``deny``) or one ``forbid`` (a rule with ``deny``); raw ``.cedar`` files listed in
``policy.files`` add anything the sugar cannot say. The rules of a tool are an allow-list:
once any allowing rule covers a tool, only what such a rule allows passes, whatever the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel
from bastion.core.attributes import LONG_MAX, MAX_ATTRIBUTES, MAX_STRING_CHARS, AttributeType

ANY = "*"
Effect = Literal["allow", "deny"]
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a Cedar identifier: context.args.<name>
_RULE_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
# the principal's own attributes, and the words Cedar reserves or names variables with
RESERVED_ATTRIBUTES = frozenset(
    {"username", "email", "roles"}
    | {"in", "has", "like", "is", "if", "then", "else", "true", "false"}
    | {"principal", "action", "resource", "context"}
)
AttributeCondition = list[str | int | bool]


class ArgMatch(ConfigModel):
    match: str = Field(
        description=(
            "Pattern the argument must match: '*' is any run of characters (also '/'), '\\*' a literal "
            "star. The value must be a string in canonical form (NFKC, no '.', '..' or empty path "
            "segments, no control characters, no percent-encoded path characters), else the call is "
            "refused."
        )
    )
    case: Literal["sensitive", "insensitive"] = Field(
        "sensitive", description="insensitive: compare after Unicode case folding (pattern and value)."
    )


class Who(ConfigModel):
    users: list[str] = Field(default_factory=list, description="Usernames, e-mail addresses or user ids.")
    groups: list[str] = Field(default_factory=list, description="Group names (from the token's groups).")
    roles: list[str] = Field(default_factory=list, description="Role names (from the token's roles).")
    attributes: dict[str, AttributeCondition] = Field(
        default_factory=dict,
        description=(
            "User attributes (declared in policy.user_attributes): {<name>: [<value>, ...]}; the user "
            "must have every attribute listed, with one of its values (a set attribute: any of them)."
        ),
    )
    clients: list[str] = Field(default_factory=list, description="OAuth client ids the user calls through.")

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttributeCondition]) -> dict[str, AttributeCondition]:
        for name, values in value.items():
            if not _ARG_NAME.match(name):
                raise ValueError(f"attribute name {name!r} must be letters, digits and '_' (at most 64)")
            if not values:
                raise ValueError(f"attribute {name!r}: list at least one value")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Who:
        if not (self.users or self.groups or self.roles or self.attributes or self.clients):
            raise ValueError("name at least one of users, groups, roles, attributes or clients")
        return self

    def describe(self) -> str:
        named = (("users", self.users), ("groups", self.groups), ("roles", self.roles))
        parts = [f"{k} {', '.join(v)}" for k, v in named if v]
        parts += [f"{k} in {', '.join(map(str, v))}" for k, v in sorted(self.attributes.items())]
        if self.clients:
            parts.append(f"clients {', '.join(self.clients)}")
        return "; ".join(parts)


class PolicyRule(ConfigModel):
    """One rule. Who: any of users/groups/roles, every attribute, and one of clients if given."""

    id: str | None = Field(
        None, description="Name shown in denials and the audit log; default: <file>:<line> or policies[i]."
    )
    description: str | None = Field(None, description="Free text for people reading the policy.")
    upstream: str = Field(ANY, description="The upstream this rule is about, or '*' for every upstream.")
    tools: list[str] | None = Field(
        None, description="Tool names (as the upstream names them) or ['*']; unset: not about tools."
    )
    prompts: list[str] | None = Field(None, description="Prompt names or ['*']; unset: not about prompts.")
    resources: list[str] | None = Field(
        None, description="Resource URI patterns ('*' is any run of characters); unset: not about resources."
    )
    require_scopes: list[str] = Field(
        default_factory=list,
        description=(
            "Scopes the token needs for what this rule allows; a token without them gets a 403 "
            "insufficient_scope challenge naming them (step-up). Allowing rules only."
        ),
    )
    allow: Who | None = Field(None, description="Who this rule allows (unset with no deny: everyone).")
    deny: Who | None = Field(None, description="Who this rule refuses, whatever other rules allow.")
    args: dict[str, ArgMatch] = Field(
        default_factory=dict,
        description=(
            "Argument constraints: {<name>: {match: 'acme/*', case: sensitive|insensitive}}; '*' is any run "
            "of characters, '\\*' a literal star. The argument must be present, a string, and in canonical "
            "form (NFKC, no '.', '..' or empty path segments, no control characters, no percent-encoded "
            "path characters), else the call is refused. While listing, allowing rules ignore them."
        ),
    )
    visibility: Literal["hidden", "visible"] = Field(
        "hidden",
        description=(
            "Whether the tools, prompts or resources this rule covers stay in lists for principals "
            "that may not use them (hidden: they are left out)."
        ),
    )

    @field_validator("id")
    @classmethod
    def _rule_id(cls, value: str | None) -> str | None:
        if value is not None and not _RULE_ID.match(value):
            raise ValueError("must be 1 to 128 printable characters")
        return value

    @field_validator("tools", "prompts")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value or any(not n or n != n.strip() for n in value):
                raise ValueError("list names (no empty names, no surrounding spaces), or ['*']")
            if ANY in value and len(value) > 1:
                raise ValueError("'*' already covers every name: list it alone")
        return value

    @field_validator("resources")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not p for p in value)):
            raise ValueError("list URI patterns such as 'file:///docs/*'")
        return value

    @field_validator("args")
    @classmethod
    def _arg_names(cls, value: dict[str, ArgMatch]) -> dict[str, ArgMatch]:
        for name in value:
            if not _ARG_NAME.match(name):
                raise ValueError(f"argument name {name!r} must be letters, digits and '_' (at most 64)")
        return value

    @model_validator(mode="after")
    def _shape(self) -> PolicyRule:
        if self.allow is not None and self.deny is not None:
            raise ValueError("a rule either allows or denies: write two rules")
        if self.deny is not None and self.require_scopes:
            raise ValueError("require_scopes applies to allowing rules, not to deny")
        if self.args and self.tools is None and self.prompts is None:
            raise ValueError("args constrain tools or prompts: set tools or prompts")
        return self

    @property
    def effect(self) -> Effect:
        return "deny" if self.deny is not None else "allow"


class PolicySettings(ConfigModel):
    default: Effect = Field(
        "allow",
        description=(
            "What happens to a tool, prompt or resource no allowing rule covers: allow, or deny "
            "(deny by default). Deny rules always apply."
        ),
    )
    upstreams: dict[str, Effect] = Field(
        default_factory=dict, description="Per-upstream default, e.g. {bank: deny} (deny by default there)."
    )
    files: list[str] = Field(
        default_factory=list,
        description=(
            "More policy files: YAML files with a top-level 'policies:' list of rules, and raw Cedar "
            "(.cedar) files validated against the generated schema (bastion policy schema)."
        ),
    )
    scope_implies: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Scope hierarchy: a scope also counts as these, e.g. {'crm:write': ['crm:read']}.",
    )
    cache_size: int = Field(
        10_000, ge=0, le=10_000_000, description="Decisions kept in memory (0: no cache); dropped on reload."
    )
    user_attributes: dict[str, AttributeType] = Field(
        default_factory=dict,
        description=(
            "User attributes rules may test, with their type: string, long, bool or set (a set of "
            "strings), e.g. {department: string, level: long}. Values come from the user record "
            "(bastion users add --attr department=sales) or an identity provider's "
            "claims.attributes; they travel in the access token, so a change reaches a user at their "
            "next token. Raw Cedar reads them as optional attributes: principal has department && "
            'principal.department == "sales". Changing this needs a restart.'
        ),
    )

    @field_validator("user_attributes")
    @classmethod
    def _declared(cls, value: dict[str, AttributeType]) -> dict[str, AttributeType]:
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"declare at most {MAX_ATTRIBUTES} attributes")
        for name in value:
            if not _ARG_NAME.match(name):
                raise ValueError(f"attribute name {name!r} must be letters, digits and '_' (at most 64)")
            if name in RESERVED_ATTRIBUTES or name.startswith("__cedar"):
                raise ValueError(f"attribute name {name!r} is reserved")
        return value


_VALUE_TYPES: dict[AttributeType, tuple[type, str]] = {
    "string": (str, "strings"),
    "set": (str, "strings"),
    "long": (int, "whole numbers"),
    "bool": (bool, "true or false"),
}


def _attribute_errors(rule: PolicyRule, declared: Mapping[str, AttributeType]) -> list[str]:
    who, part = (rule.deny, "deny") if rule.deny is not None else (rule.allow, "allow")
    errors: list[str] = []
    for name, values in sorted((who.attributes if who is not None else {}).items()):
        kind = declared.get(name)
        if kind is None:
            errors.append(f"{part}.attributes: '{name}' is not declared in policy.user_attributes")
            continue
        wanted, what = _VALUE_TYPES[kind]
        if any(type(v) is not wanted for v in values):
            errors.append(f"{part}.attributes.{name}: values must be {what} ({name} is declared {kind})")
        elif any(isinstance(v, str) and len(v) > MAX_STRING_CHARS for v in values):
            errors.append(f"{part}.attributes.{name}: values are at most {MAX_STRING_CHARS} characters")
        elif any(type(v) is int and abs(v) > LONG_MAX for v in values):
            errors.append(f"{part}.attributes.{name}: values must fit in 64 bits")
    return errors


def rule_errors(
    rule: PolicyRule,
    upstreams: Iterable[str],
    scopes: Iterable[str],
    attributes: Mapping[str, AttributeType],
) -> list[str]:
    """What is wrong with a rule given the configured upstreams, ``auth.scopes`` and
    ``policy.user_attributes``."""
    errors: list[str] = []
    if rule.upstream != ANY and rule.upstream not in set(upstreams):
        errors.append(f"upstream '{rule.upstream}' is not configured")
    unknown = sorted(set(rule.require_scopes) - set(scopes))
    if unknown:
        errors.append(f"require_scopes {unknown} are not in auth.scopes")
    return errors + _attribute_errors(rule, declared=attributes)


def policy_settings_errors(
    policy: PolicySettings, upstreams: Iterable[str], scopes: Iterable[str]
) -> list[str]:
    names, known = set(upstreams), set(scopes)
    errors = [
        f"policy.upstreams: '{name}' is not configured" for name in policy.upstreams if name not in names
    ]
    for scope, implied in policy.scope_implies.items():
        unknown = sorted({scope, *implied} - known)
        if unknown:
            errors.append(f"policy.scope_implies: {unknown} are not in auth.scopes")
    return errors


def configured(policies: list[PolicyRule], policy: PolicySettings) -> bool:
    """Whether any policy is in force (otherwise every call is allowed at no cost)."""
    return bool(policies or policy.files or policy.default == "deny" or "deny" in policy.upstreams.values())
