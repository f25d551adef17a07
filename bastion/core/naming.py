"""The aggregate endpoint's collision-free naming scheme (pure; shared by policy and upstream).

Upstream names match ``[a-z][a-z0-9-]*``: no ``_`` and no ``+``. So:

* tools and prompts: ``<upstream>__<name>`` — split at the first ``__``;
* resources and resource templates: ``<upstream>+<uri>`` — ``time+file:///x``; the result is
  still a URI (``+`` is legal in a scheme) and templates stay templates; split at the first ``+``.
"""

from __future__ import annotations

TOOL_SEPARATOR = "__"
URI_SEPARATOR = "+"


def tool_name(upstream: str, name: str) -> str:
    return f"{upstream}{TOOL_SEPARATOR}{name}"


def split_tool_name(qualified: str) -> tuple[str, str] | None:
    upstream, sep, name = qualified.partition(TOOL_SEPARATOR)
    if not sep or not upstream or not name:
        return None
    return upstream, name


def resource_uri(upstream: str, uri: str) -> str:
    return f"{upstream}{URI_SEPARATOR}{uri}"


def split_resource_uri(qualified: str) -> tuple[str, str] | None:
    upstream, sep, uri = qualified.partition(URI_SEPARATOR)
    if not sep or not upstream or not uri or ":" in upstream or "/" in upstream:
        return None
    return upstream, uri


__all__ = [
    "TOOL_SEPARATOR",
    "URI_SEPARATOR",
    "resource_uri",
    "split_resource_uri",
    "split_tool_name",
    "tool_name",
]
