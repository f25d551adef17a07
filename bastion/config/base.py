"""The base of every configuration model: unknown keys are errors, values are frozen."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def https_url(value: str | None, *, fragment: bool = True) -> str | None:
    """An https URL (plain http only on loopback, for development); never normalized, since
    issuers and resource identifiers compare exactly."""
    if value is None:
        return value
    parts = urlsplit(value)
    loopback = parts.hostname in LOOPBACK_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("must be an https URL (http only on loopback, for development)")
    if not fragment and (parts.fragment or "#" in value):
        raise ValueError("must not have a fragment")
    return value
