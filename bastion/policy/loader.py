"""The policy stage for a configuration: the Cedar engine when any policy is configured, else
:class:`~bastion.policy.allow_all.AllowAll` (no cost at all on the request path)."""

from __future__ import annotations

from pathlib import Path

from bastion.config.model import Settings
from bastion.config.policy import configured
from bastion.core.stages import PolicyEngine
from bastion.policy.allow_all import AllowAll
from bastion.policy.engine import CedarPolicy


def load_policy(settings: Settings, *, base_dir: Path | None = None) -> PolicyEngine:
    """Raises ConfigError (naming the file and line) when a policy is invalid."""
    if not configured(settings.policies, settings.policy):
        return AllowAll()
    return CedarPolicy.from_settings(settings, base_dir=base_dir)


__all__ = ["load_policy"]
