"""Bastion: a self-hostable authorization gateway for MCP servers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion._version import __version__

if TYPE_CHECKING:
    from bastion.app import create_app
    from bastion.config import load_config

__all__ = ["__version__", "create_app", "load_config"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `python -m bastion.demo.server` and the admin commands must not pay
    # for the whole gateway (seconds of imports) before they start.
    if name == "create_app":
        from bastion.app import create_app

        return create_app
    if name == "load_config":
        from bastion.config import load_config

        return load_config
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")
