"""How a credential is presented to an upstream (``upstreams[].auth``): a request header with a
template, or an environment variable of a stdio upstream's process."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from bastion.config.base import ConfigModel

_MANAGED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "connection",
        "transfer-encoding",
    }
)


def header_name(value: str) -> str:
    name = value.strip().lower()
    if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", name):
        raise ValueError("must be an HTTP header name")
    if name in _MANAGED_HEADERS:
        raise ValueError(f"{name} is managed by Bastion")
    return name


def token_template(value: str) -> str:
    if value.count("{token}") != 1 or re.search(r"[\r\n]", value):
        raise ValueError("must contain {token} exactly once, on one line")
    return value


class Presented(ConfigModel):
    """Where the credential goes: a header of every request (HTTP upstreams) or an environment
    variable of the process (stdio upstreams; per-user credentials get a process per user)."""

    header: str = Field("authorization", description="HTTP upstreams: the request header that carries it.")
    template: str = Field(
        "Bearer {token}",
        description=(
            "The header's value; {token} is the credential (e.g. '{token}'). user_oauth with a preset that "
            "keeps one (salesforce) may also use {instance_url}, the user's API base."
        ),
    )
    env: str | None = Field(
        None, description="stdio upstreams: the environment variable that carries the credential."
    )

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return header_name(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return token_template(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value):
            raise ValueError("must be an environment variable name (letters, digits, '_')")
        return value


__all__ = ["Presented", "header_name", "token_template"]
