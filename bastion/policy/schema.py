"""The Cedar schema every policy is validated against (``bastion policy schema`` prints it).

Entities (namespace ``Bastion``)::

    User in [Group] { username: String, email?: String, roles: Set<String>, <attributes> }
                                             a signed-in user
    Client                                   a machine client (client_credentials token)
    Group, Upstream
    Tool in [Upstream], Prompt in [Upstream]               id "<upstream>/<name>"
    McpResource in [Upstream] { uri: String }              id "<upstream>/<uri>"

Actions: ``call_tool`` (Tool), ``get_prompt`` (Prompt), ``read_resource`` (McpResource; also
subscribe), and on the Upstream itself ``list_tools``, ``list_prompts``, ``list_resources``,
``list_resource_templates`` and ``use_upstream`` (any other method, e.g. completion).

Context: ``scopes`` (the token's scopes, hierarchy expanded), ``client`` (the OAuth client id,
"" without one), ``era`` ("legacy" or "modern"), ``time`` (unix seconds), ``listing`` (true
while a list result is filtered: ``args`` is then empty), ``args`` and ``args_casefold``
(every argument name a rule constrains, as an optional String; the casefolded values for
case-insensitive rules).

The user's ``<attributes>`` are those ``policy.user_attributes`` declares, each optional and of
its declared type (``department?: String``, ``level?: Long``, ``contractor?: Bool``,
``regions?: Set<String>``): a user has one only when the record (or the identity provider) gave
a value of that type, so policies test ``principal has <name>`` before reading it.

Tools and prompts carry no attributes, so a decision can only depend on which tool is called
through ``==``/``in`` with entity literals: the engine indexes policies by those literals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bastion.core.attributes import AttributeType
from bastion.policy.canonical import split_pattern

NAMESPACE = "Bastion"
USER, CLIENT, GROUP, UPSTREAM = "User", "Client", "Group", "Upstream"
TOOL, PROMPT, RESOURCE = "Tool", "Prompt", "McpResource"

# the per-item actions and the entity type they act on
ITEM_ACTIONS = {"call_tool": TOOL, "get_prompt": PROMPT, "read_resource": RESOURCE}
# the actions on the upstream itself
UPSTREAM_ACTIONS = ("list_tools", "list_prompts", "list_resources", "list_resource_templates", "use_upstream")
ACTIONS: tuple[str, ...] = (*ITEM_ACTIONS, *UPSTREAM_ACTIONS)
KIND_ACTION = {"tool": "call_tool", "prompt": "get_prompt", "resource": "read_resource"}
KIND_TYPE = {"tool": TOOL, "prompt": PROMPT, "resource": RESOURCE}
ITEM_TYPES = frozenset(ITEM_ACTIONS.values())
CONTEXT_FIELDS = ("scopes", "client", "era", "time", "listing", "args", "args_casefold")
CEDAR_TYPES: dict[AttributeType, str] = {
    "string": "String",
    "long": "Long",
    "bool": "Bool",
    "set": "Set<String>",
}


def qualified(type_name: str) -> str:
    return f"{NAMESPACE}::{type_name}"


def quote(text: str) -> str:
    """A Cedar string literal."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def like_literal(pattern: str) -> str:
    """A Cedar ``like`` pattern literal: ``*`` is the wildcard, ``\\*`` a literal star."""
    pieces = [quote(piece)[1:-1].replace("*", "\\*") for piece in split_pattern(pattern)]
    return '"' + "*".join(pieces) + '"'


def entity(type_name: str, entity_id: str) -> str:
    return f"{qualified(type_name)}::{quote(entity_id)}"


def action(name: str) -> str:
    return f"{qualified('Action')}::{quote(name)}"


def literal(value: str | int | bool) -> str:
    """A Cedar String, Long or Bool literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else quote(value)


def schema_text(arg_names: Iterable[str], attributes: Mapping[str, AttributeType] | None = None) -> str:
    """The schema; ``attributes``: ``policy.user_attributes``, optional attributes of a User."""
    args = ", ".join(f"{name}?: String" for name in sorted(set(arg_names)))
    user = ["username: String", "email?: String", "roles: Set<String>"]
    user += [f"{name}?: {CEDAR_TYPES[kind]}" for name, kind in sorted((attributes or {}).items())]
    principals = f"[{USER}, {CLIENT}]"
    lines = [
        f"namespace {NAMESPACE} {{",
        f"  entity {GROUP};",
        f"  entity {USER} in [{GROUP}] {{ {', '.join(user)} }};",
        f"  entity {CLIENT};",
        f"  entity {UPSTREAM};",
        f"  entity {TOOL} in [{UPSTREAM}];",
        f"  entity {PROMPT} in [{UPSTREAM}];",
        f"  entity {RESOURCE} in [{UPSTREAM}] {{ uri: String }};",
        f"  type Args = {{ {args} }};",
        "  type Context = { scopes: Set<String>, client: String, era: String, time: Long, "
        "listing: Bool, args: Args, args_casefold: Args };",
    ]
    targets = [*ITEM_ACTIONS.items(), *((name, UPSTREAM) for name in UPSTREAM_ACTIONS)]
    for name, resource in targets:
        applies = f"principal: {principals}, resource: [{resource}], context: Context"
        lines.append(f"  action {name} appliesTo {{ {applies} }};")
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = [
    "ACTIONS",
    "CLIENT",
    "GROUP",
    "ITEM_ACTIONS",
    "KIND_ACTION",
    "NAMESPACE",
    "PROMPT",
    "RESOURCE",
    "TOOL",
    "UPSTREAM",
    "UPSTREAM_ACTIONS",
    "USER",
    "action",
    "entity",
    "like_literal",
    "literal",
    "qualified",
    "quote",
    "schema_text",
]
