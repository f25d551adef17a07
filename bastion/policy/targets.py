"""What an MCP message asks for, in policy terms: an action on an item of an upstream.

=============================================  ==========================================
``tools/call``                                 ``call_tool`` on Tool ``<upstream>/<name>``
``prompts/get``                                ``get_prompt`` on Prompt
``resources/read``, ``/subscribe``, ``/unsubscribe``  ``read_resource`` on McpResource (its URI)
``completion/complete`` (a prompt ref)         ``get_prompt`` on that prompt
``tools/list`` ... ``resources/templates/list``  ``list_*`` on the Upstream (items filtered)
any other request                              ``use_upstream`` on the Upstream
initialize, ping, server/discover,             always allowed (protocol plumbing)
logging/setLevel, notifications, responses,
GET and DELETE
=============================================  ==========================================

On the aggregate endpoint ``/mcp`` names are ``<upstream>__<name>`` and ``<upstream>+<uri>``
(:mod:`bastion.core.naming`); lists there are judged per upstream by the list filter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from bastion.core.naming import split_resource_uri, split_tool_name
from bastion.core.records import InboundCall, MessageKind

PLUMBING = frozenset({"initialize", "ping", "server/discover", "logging/setLevel"})
LIST_ACTIONS = {
    "tools/list": "list_tools",
    "prompts/list": "list_prompts",
    "resources/list": "list_resources",
    "resources/templates/list": "list_resource_templates",
}
KIND_LIST_ACTION = {
    "tools": "list_tools",
    "prompts": "list_prompts",
    "resources": "list_resources",
    "resourceTemplates": "list_resource_templates",
}
_ITEM_METHODS = {
    "tools/call": ("call_tool", "name"),
    "prompts/get": ("get_prompt", "name"),
    "resources/read": ("read_resource", "uri"),
    "resources/subscribe": ("read_resource", "uri"),
    "resources/unsubscribe": ("read_resource", "uri"),
}


_WITH_ARGUMENTS = frozenset({"tools/call", "prompts/get"})


class Target(NamedTuple):
    action: str
    upstream: str | None  # None: every upstream (a list on the aggregate endpoint)
    name: str | None  # the item (tool/prompt name, resource URI); None: the upstream itself
    args: dict[str, Any]


class Refused(NamedTuple):
    reason: str


def _split(action_name: str, upstream: str | None, name: str) -> tuple[str, str] | None:
    if upstream is not None:
        return upstream, name
    return split_resource_uri(name) if action_name == "read_resource" else split_tool_name(name)


def target(call: InboundCall) -> Target | Refused | None:
    """None: protocol plumbing, always allowed."""
    method = call.method
    if method is None or call.kind is not MessageKind.REQUEST or call.http_method != "POST":
        return None
    params = call.message.get("params")
    if not isinstance(params, dict):
        params = {}
    item = _ITEM_METHODS.get(method)
    if item is not None:  # the common case first: tools/call and the like
        return _item(call, method, item, params)
    if method in PLUMBING or method.startswith("notifications/"):
        return None
    if method in LIST_ACTIONS:
        return Target(LIST_ACTIONS[method], call.endpoint, None, {})
    ref = params.get("ref")
    if method == "completion/complete" and isinstance(ref, dict) and ref.get("type") == "ref/prompt":
        return _item(call, method, ("get_prompt", "name"), ref)
    if call.endpoint is None:
        return None  # not routed to one upstream (the aggregate refuses unknown methods)
    return Target("use_upstream", call.endpoint, None, {})


def _item(call: InboundCall, method: str, item: tuple[str, str], params: dict[str, Any]) -> Target | Refused:
    action_name, key = item
    name = params.get(key)
    if not isinstance(name, str) or not name:
        return Refused(f"{method} without a {key}")
    split = _split(action_name, call.endpoint, name)
    if split is None:
        return Refused(f"'{name[:200]}' does not name an upstream (names on /mcp are <upstream>__<name>)")
    args = params.get("arguments") if method in _WITH_ARGUMENTS else None
    return Target(action_name, split[0], split[1], args if isinstance(args, dict) else {})


__all__ = ["KIND_LIST_ACTION", "LIST_ACTIONS", "Refused", "Target", "target"]
