"""Configuration: pydantic models (``extra="forbid"``), YAML + ``${ENV}`` loading, JSON Schema."""

from bastion.config.loader import load_config, load_config_text
from bastion.config.model import Settings

__all__ = ["Settings", "load_config", "load_config_text"]
