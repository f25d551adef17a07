"""List results filtered by policy: what one principal may see of an upstream's tools, prompts,
resources and resource templates (``Decision.lists``). A filtered 2026-07-28 result is marked
``cacheScope: "private"``: it depends on who asked."""

from __future__ import annotations

from typing import Any

from bastion.core.records import ListFilter

JsonObject = dict[str, Any]

LIST_KINDS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


def filter_result(
    result: JsonObject, *, method: str | None, upstream: str, lists: ListFilter, modern: bool
) -> JsonObject:
    kind = LIST_KINDS.get(method or "")
    items = result.get(kind) if kind is not None else None
    if kind is None or not isinstance(items, list):
        return result
    visible = lists.visible(upstream, kind, [item for item in items if isinstance(item, dict)])
    filtered = {**result, kind: visible}
    if modern or "cacheScope" in result:
        filtered["cacheScope"] = "private"
    return filtered


def filter_response(
    response: JsonObject, *, method: str | None, upstream: str, lists: ListFilter | None, modern: bool
) -> JsonObject:
    """A whole JSON-RPC response whose result is filtered (errors and other methods unchanged)."""
    result = response.get("result")
    if lists is None or method not in LIST_KINDS or not isinstance(result, dict):
        return response
    return {
        **response,
        "result": filter_result(result, method=method, upstream=upstream, lists=lists, modern=modern),
    }
