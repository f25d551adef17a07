"""The configuration tree. Every key is documented here; docs/configuration.md is generated from it."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.auth import Auth
from bastion.config.base import ConfigModel
from bastion.config.checks import check_upstream_auth
from bastion.config.clients import OAuthClient
from bastion.config.connections import Connection, connection_errors
from bastion.config.ema import Ema
from bastion.config.idp import IdentityProvider
from bastion.config.policy import PolicyRule, PolicySettings, policy_settings_errors, rule_errors
from bastion.config.upstream_auth import (
    NoUpstreamAuth,
    UpstreamAuth,
    UpstreamOAuthAuth,
    UserApiKeyAuth,
    UserOAuthAuth,
)
from bastion.config.vault import VaultSettings

UPSTREAM_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
EraName = Literal["legacy", "modern"]


def _both_eras() -> list[EraName]:
    return ["legacy", "modern"]


class Timeouts(ConfigModel):
    connect: float = Field(5.0, gt=0, description="Seconds to establish a connection to the upstream.")
    request: float = Field(
        300.0, gt=0, description="Seconds a single request may take end to end (streams included)."
    )
    idle: float = Field(
        120.0, gt=0, description="Seconds a streamed response may stay silent before Bastion gives up."
    )


class HttpUpstream(ConfigModel):
    url: str = Field(description="Streamable HTTP endpoint of the upstream MCP server.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Static headers sent on every upstream request (use ${ENV_VAR} for secrets).",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Connect, request and idle limits.")
    max_connections: int = Field(100, ge=1, description="Connection pool size towards this upstream.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _no_hop_headers(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"host", "content-length", "transfer-encoding", "connection", "mcp-session-id"}
        bad = sorted(k for k in value if k.lower() in reserved)
        if bad:
            raise ValueError(f"these headers are managed by Bastion and cannot be set: {', '.join(bad)}")
        return value


class Restart(ConfigModel):
    initial_backoff: float = Field(0.5, gt=0, description="Seconds before the first restart.")
    max_backoff: float = Field(30.0, gt=0, description="Upper bound of the exponential restart backoff.")
    stable_after: float = Field(
        30.0, gt=0, description="A process that lived this long resets the backoff to its initial value."
    )


class StdioUpstream(ConfigModel):
    command: str = Field(description="Executable to launch (looked up on PATH).")
    args: list[str] = Field(default_factory=list, description="Command-line arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables (use ${ENV_VAR} for secrets)."
    )
    cwd: str | None = Field(None, description="Working directory; default: Bastion's own.")
    inherit_env: bool = Field(
        True, description="Pass Bastion's environment to the process (PATH, HOME, ...) in addition to env."
    )
    restart: Restart = Field(default_factory=Restart, description="Restart policy when the process dies.")
    timeouts: Timeouts = Field(
        default_factory=Timeouts, description="connect: start + initialize; request: per call; idle: unused."
    )
    isolation: Literal["session", "shared"] = Field(
        "session",
        description=(
            "session: each legacy-era client session gets its own process, initialized with that "
            "client's own capabilities (full fidelity for sampling/elicitation/roots). shared: one "
            "process for everyone. Modern-era clients always use the shared process."
        ),
    )
    max_processes: int = Field(32, ge=1, description="Cap on concurrent per-session processes.")
    idle_timeout: float = Field(
        600.0, gt=0, description="Seconds after which an idle per-session process stops."
    )
    shutdown_grace: float = Field(5.0, ge=0, description="Seconds between SIGTERM and SIGKILL on shutdown.")


class Upstream(ConfigModel):
    name: str = Field(description="Endpoint name: served at /mcp/<name>. Lowercase letters, digits, '-'.")
    title: str | None = Field(None, description="Human-readable name, shown in logs and listings.")
    client_eras: list[EraName] = Field(
        default_factory=_both_eras,
        min_length=1,
        description=(
            "Protocol eras served to clients on /mcp/<name> (whatever the upstream speaks; the gap is "
            "bridged). Without 'modern', server/discover gets -32022 and clients fall back to initialize."
        ),
    )
    required_scopes: list[str] = Field(
        default_factory=list,
        description=(
            "Scopes a token needs for /mcp/<name> and for this upstream's tools via /mcp "
            "(besides auth.required_scopes)."
        ),
    )
    identity_provider: str | None = Field(
        None,
        description=(
            "Users of /mcp/<name> sign in through this identity provider (by name), skipping the choice."
        ),
    )
    annotate_tools: Literal["none", "field", "meta", "both"] = Field(
        "none",
        description=(
            "#234 compatibility: annotate each tool in tools/list with the authorization it needs, "
            '{"method": "oauth2" | "none", "requiredScopes": [...]}, as a top-level "authorization" field, '
            'in _meta["authorization"], or both.'
        ),
    )
    auth: UpstreamAuth = Field(
        default_factory=NoUpstreamAuth,
        description="How Bastion authenticates to this upstream for each user (none, ema, client_supplied).",
    )
    http: HttpUpstream | None = Field(
        None, description="A remote Streamable HTTP server (set this or stdio)."
    )
    stdio: StdioUpstream | None = Field(
        None, description="A local server Bastion launches (set this or http)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not UPSTREAM_NAME.match(value):
            raise ValueError(
                "must start with a lowercase letter and contain only lowercase letters, digits and '-' "
                "(at most 63): it appears in URLs and in aggregated tool names"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one_transport(self) -> Upstream:
        if (self.http is None) == (self.stdio is None):
            raise ValueError("exactly one of 'http' or 'stdio' must be set")
        return self


class Edge(ConfigModel):
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host header values accepted (DNS-rebinding protection). Default: the host of public_url and "
            "of listen, plus localhost/127.0.0.1 when listening on loopback. '*' disables the check."
        ),
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins accepted besides public_url's own. Requests without an Origin header pass.",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    trust_forwarded_headers: bool = Field(
        False, description="Honour X-Forwarded-For/Proto from a reverse proxy in logs."
    )


class Aggregate(ConfigModel):
    enabled: bool = Field(True, description="Serve the merged endpoint /mcp over all upstreams.")
    separator: Literal["__"] = Field(
        "__", description="Tool/prompt names become <upstream>__<name>; resource URIs <upstream>+<uri>."
    )


class Sessions(ConfigModel):
    idle_ttl: float = Field(3600.0, gt=0, description="Seconds an unused legacy-era session is kept.")


class Audit(ConfigModel):
    enabled: bool = Field(True, description="Record one audit event per MCP request (recommended).")
    jsonl_path: str | None = Field(None, description="Also append every record to this JSON Lines file.")
    retention_days: int | None = Field(
        None, ge=1, description="Delete records older than this; default keep."
    )
    flush_interval: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Seconds a record may wait in memory before its batch is written (one transaction each).",
    )
    batch_size: int = Field(1024, ge=1, le=100_000, description="Most records written in one transaction.")


class Logging(ConfigModel):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Minimum level logged.")
    format: Literal["text", "json"] = Field(
        "text", description="text for people, json (one object per line)."
    )


class Settings(ConfigModel):
    """Root of bastion.yaml."""

    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="The URL clients use to reach Bastion (scheme, host, port; no path).",
    )
    listen: str = Field("127.0.0.1:8080", description="host:port to bind.")
    storage: str = Field(
        "sqlite:///./.bastion/bastion.db",
        description="sqlite:///path (embedded default) or postgresql://user:password@host/db.",
    )
    auth: Auth = Field(default_factory=Auth, description="Authentication of MCP clients.")
    upstreams: list[Upstream] = Field(
        default_factory=list, description="The MCP servers Bastion fronts, each at /mcp/<name>."
    )
    edge: Edge = Field(default_factory=Edge, description="HTTP-level protections of the MCP endpoints.")
    aggregate: Aggregate = Field(default_factory=Aggregate, description="The merged endpoint /mcp.")
    sessions: Sessions = Field(default_factory=Sessions, description="Legacy-era (Mcp-Session-Id) sessions.")
    audit: Audit = Field(
        default_factory=Audit, description="The audit log (always in storage; optionally JSONL)."
    )
    logging: Logging = Field(default_factory=Logging, description="Server log output (stderr).")
    identity_providers: list[IdentityProvider] = Field(
        default_factory=list,
        description=(
            "Enterprise identity providers users sign in with (Entra ID, Okta, Google, Keycloak, Auth0, "
            "any OIDC provider); Bastion is one pre-registered client at each."
        ),
    )
    ema: Ema = Field(
        default_factory=Ema,
        description="Enterprise-Managed Authorization: enterprise IdPs whose ID-JAGs Bastion redeems.",
    )
    clients: list[OAuthClient] = Field(
        default_factory=list,
        description=("Pre-registered OAuth clients (others register dynamically or by metadata document)."),
    )
    policies: list[PolicyRule] = Field(
        default_factory=list,
        description=(
            "Tool-level authorization rules (YAML sugar for Cedar): who may call which tool, read "
            "which resource, get which prompt, with which scopes and arguments."
        ),
    )
    policy: PolicySettings = Field(
        default_factory=PolicySettings,
        description="Policy defaults (allow or deny), more policy files (YAML, raw Cedar), scope hierarchy.",
    )
    vault: VaultSettings = Field(
        default_factory=VaultSettings,
        description="The credential vault's master keys: users' downstream tokens are encrypted at rest.",
    )
    connections: list[Connection] = Field(
        default_factory=list,
        description=(
            "Downstream services users connect their own accounts at (OAuth providers or API keys), "
            "for upstreams with auth.type user_oauth / user_api_key; each at /connect/<name>."
        ),
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an absolute http(s) URL without query or fragment")
        if parts.path not in ("", "/"):
            raise ValueError("must not have a path: Bastion serves /mcp and its other endpoints at the root")
        return value.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if not value.startswith(
            ("sqlite://", "sqlite+aiosqlite://", "postgresql://", "postgresql+asyncpg://")
        ):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("clients")
    @classmethod
    def _unique_clients(cls, value: list[OAuthClient]) -> list[OAuthClient]:
        seen: set[str] = set()
        for client in value:
            if client.client_id in seen:
                raise ValueError(f"client_id '{client.client_id}' is used twice")
            seen.add(client.client_id)
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for upstream in self.upstreams:
            if upstream.name in seen:
                raise ValueError(f"upstream name '{upstream.name}' is used twice")
            seen.add(upstream.name)
            unknown = sorted(set(upstream.required_scopes) - set(self.auth.scopes))
            if unknown:
                raise ValueError(
                    f"upstream '{upstream.name}': required_scopes {unknown} are not in auth.scopes"
                )
        unknown = sorted(set(self.auth.required_scopes) - set(self.auth.scopes))
        if unknown:
            raise ValueError(f"auth.required_scopes {unknown} are not in auth.scopes")
        self._check_identity_providers()
        if not self.auth.enabled and not self.listens_on_loopback():
            raise ValueError(
                "auth.enabled: false is for development on loopback only: listen on 127.0.0.1 or [::1], "
                "or turn authentication on"
            )
        return self

    @model_validator(mode="after")
    def _check_connections(self) -> Settings:
        errors = connection_errors(self.connections)
        kinds = {c.name: c.type for c in self.connections}
        for upstream in self.upstreams:
            auth = upstream.auth
            if isinstance(auth, UpstreamOAuthAuth) and upstream.name in kinds:
                errors.append(
                    f"upstream '{upstream.name}': auth.type upstream_oauth makes a connection of that name, "
                    "and connections has one already"
                )
            if isinstance(auth, UserOAuthAuth | UserApiKeyAuth):
                wanted = "oauth" if isinstance(auth, UserOAuthAuth) else "api_key"
                kind = kinds.get(auth.connection)
                if kind is None:
                    errors.append(
                        f"upstream '{upstream.name}': auth.connection '{auth.connection}' is not one of "
                        "connections"
                    )
                elif kind != wanted:
                    errors.append(
                        f"upstream '{upstream.name}': auth.type {auth.type} needs a connection of type "
                        f"{wanted}, and '{auth.connection}' is {kind}"
                    )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @model_validator(mode="after")
    def _check_policies(self) -> Settings:
        names = [u.name for u in self.upstreams]
        errors = policy_settings_errors(self.policy, names, self.auth.scopes)
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.policies):
            label = f"policies[{i}]" + (f" ('{rule.id}')" if rule.id else "")
            problems = rule_errors(rule, names, self.auth.scopes, self.policy.user_attributes)
            errors.extend(f"{label}: {e}" for e in problems)
            if rule.id is not None:
                if rule.id in seen:
                    errors.append(f"{label}: id '{rule.id}' is also used by policies[{seen[rule.id]}]")
                seen[rule.id] = i
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _check_identity_providers(self) -> None:
        names = [p.name for p in self.identity_providers]
        if len(set(names)) != len(names):
            raise ValueError("identity_providers: a name is used twice")
        if not self.auth.login.password and not names:
            raise ValueError("auth.login.password: false needs at least one identity provider")
        domains: dict[str, str] = {}
        for provider in self.identity_providers:
            for grant in provider.grants:
                unknown = sorted(set(grant.scopes) - set(self.auth.scopes))
                if unknown:
                    raise ValueError(
                        f"identity provider '{provider.name}': grant scopes {unknown} are not in auth.scopes"
                    )
            undeclared = sorted(set(provider.claims.attributes) - set(self.policy.user_attributes))
            if undeclared:
                raise ValueError(
                    f"identity provider '{provider.name}': claims.attributes {undeclared} are not "
                    "declared in policy.user_attributes"
                )
            for domain in provider.email_domains:
                if domain in domains:
                    raise ValueError(
                        f"e-mail domain {domain} is claimed by both '{domains[domain]}' and '{provider.name}'"
                    )
                domains[domain] = provider.name
        for upstream in self.upstreams:
            if upstream.identity_provider is not None and upstream.identity_provider not in names:
                raise ValueError(
                    f"upstream '{upstream.name}': identity_provider "
                    f"'{upstream.identity_provider}' is not configured"
                )
            check_upstream_auth(
                upstream,
                providers=names,
                auth_enabled=self.auth.enabled,
                bridge_enabled=self.ema.bridge.enabled,
            )

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def listens_on_loopback(self) -> bool:
        host = self.listen_host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


UpstreamName = Annotated[str, Field(pattern=UPSTREAM_NAME.pattern)]
