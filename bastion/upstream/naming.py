"""The aggregate endpoint's collision-free naming scheme (the pure name helpers live in
:mod:`bastion.core.naming`, shared with the policy stage; re-exported here).

Upstream names match ``[a-z][a-z0-9-]*``: no ``_`` and no ``+``. So:

* tools and prompts: ``<upstream>__<name>`` — split at the first ``__``;
* resources and resource templates: ``<upstream>+<uri>`` — ``time+file:///x``; the result is
  still a URI (``+`` is legal in a scheme) and templates stay templates; split at the first ``+``.
"""

from __future__ import annotations

from typing import Any

from bastion.core.naming import (
    TOOL_SEPARATOR,
    URI_SEPARATOR,
    resource_uri,
    split_resource_uri,
    split_tool_name,
    tool_name,
)

JsonObject = dict[str, Any]


def qualify_items(upstream: str, kind: str, items: list[Any]) -> list[JsonObject]:
    """Rename the items of a list result (tools, prompts, resources, resourceTemplates)."""
    out: list[JsonObject] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if kind in ("tools", "prompts") and isinstance(item.get("name"), str):
            out.append({**item, "name": tool_name(upstream, item["name"])})
        elif kind == "resources" and isinstance(item.get("uri"), str):
            out.append({**item, "uri": resource_uri(upstream, item["uri"])})
        elif kind == "resourceTemplates" and isinstance(item.get("uriTemplate"), str):
            out.append({**item, "uriTemplate": resource_uri(upstream, item["uriTemplate"])})
    return out


def qualify_contents(upstream: str, result: JsonObject) -> JsonObject:
    """resources/read results name the URIs they carry: qualify those too."""
    contents = result.get("contents")
    if not isinstance(contents, list):
        return result
    renamed = [
        {**c, "uri": resource_uri(upstream, c["uri"])}
        if isinstance(c, dict) and isinstance(c.get("uri"), str)
        else c
        for c in contents
    ]
    return {**result, "contents": renamed}


def qualify_notification(upstream: str, message: JsonObject) -> JsonObject:
    """An upstream notification as the aggregate's client must see it."""
    params = message.get("params")
    if message.get("method") == "notifications/resources/updated" and isinstance(params, dict):
        uri = params.get("uri")
        if isinstance(uri, str):
            return {**message, "params": {**params, "uri": resource_uri(upstream, uri)}}
    return message


__all__ = [
    "TOOL_SEPARATOR",
    "URI_SEPARATOR",
    "qualify_contents",
    "qualify_items",
    "qualify_notification",
    "resource_uri",
    "split_resource_uri",
    "split_tool_name",
    "tool_name",
]
