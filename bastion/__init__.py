"""Bastion: a self-hostable authorization gateway for MCP servers."""

from bastion._version import __version__
from bastion.app import create_app
from bastion.config import load_config

__all__ = ["__version__", "create_app", "load_config"]
