"""List results filtered by policy: what one principal may see of an upstream's tools, prompts,
resources and resource templates (``Decision.lists``), and tools annotated in the #234 shape. A
filtered 2026-07-28 result is marked ``cacheScope: "private"``: it depends on who asked."""

from __future__ import annotations

from typing import Any

from bastion.config.model import Settings
from bastion.config.upstream_auth import ClientSuppliedAuth
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


class ToolAnnotations:
    """The #234 proposal's ``authorization`` annotation on tools (``upstreams[].annotate_tools``):
    ``{"method": "oauth2", "requiredScopes": [...]}`` for a tool that needs a token the client
    supplies (``auth: {type: client_supplied}``: its downstream scopes) or for which policy asks
    Bastion's token for scopes (the rules' ``require_scopes``), ``{"method": "none"}`` otherwise."""

    def __init__(self, settings: Settings) -> None:
        self._styles = {u.name: u.annotate_tools for u in settings.upstreams if u.annotate_tools != "none"}
        self._supplied = {
            u.name: u.auth for u in settings.upstreams if isinstance(u.auth, ClientSuppliedAuth)
        }

    def applies(self, upstream: str | None) -> bool:
        """Whether tools/list results of ``upstream`` (None: the aggregate) are annotated."""
        return bool(self._styles) if upstream is None else upstream in self._styles

    def annotate(
        self, upstream: str, tools: list[JsonObject], policy: ListFilter | None = None
    ) -> list[JsonObject]:
        style = self._styles.get(upstream)
        if style is None:
            return tools
        supplied = self._supplied.get(upstream)
        required = getattr(policy, "required_scopes", None)  # what policy asks of Bastion's token
        out: list[JsonObject] = []
        for tool in tools:
            name = tool.get("name")
            annotation: JsonObject = {"method": "none"}
            if supplied is not None:
                scopes = supplied.tool_scopes.get(name, supplied.scopes) if isinstance(name, str) else []
                annotation = {"method": "oauth2", "requiredScopes": list(scopes)}
            elif required is not None and isinstance(name, str) and (needed := required(upstream, name)):
                annotation = {"method": "oauth2", "requiredScopes": list(needed)}
            annotated = dict(tool)
            if style in ("field", "both"):
                annotated["authorization"] = annotation
            if style in ("meta", "both"):
                meta = tool.get("_meta")
                annotated["_meta"] = {**(meta if isinstance(meta, dict) else {}), "authorization": annotation}
            out.append(annotated)
        return out


class AnnotatedLists:
    """Policy's filter (if any), then the tool annotations: one ListFilter for the upstream stage."""

    def __init__(self, inner: ListFilter | None, annotations: ToolAnnotations) -> None:
        self._inner = inner
        self._annotations = annotations

    def visible(self, upstream: str, kind: str, items: list[JsonObject]) -> list[JsonObject]:
        if self._inner is not None:
            items = self._inner.visible(upstream, kind, items)
        return self._annotations.annotate(upstream, items, self._inner) if kind == "tools" else items
