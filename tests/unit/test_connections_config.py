"""``connections:`` (issue #7): the configuration accepts each preset as documented, refuses what
cannot work with an error naming the key, and resolves presets + overrides into what the provider
client runs on; the authorization request carries PKCE, state and each provider's quirks."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bastion.config import load_config_text
from bastion.config.connections import ApiKeyConnection, OAuthConnection
from bastion.core.errors import ConfigError
from bastion.vault.model import ProviderUnavailable
from bastion.vault.presets import PRESETS, ResolvedConnection, resolve
from bastion.vault.provider import Providers

ENV = {"GH_SECRET": "gh-secret", "SF_SECRET": "sf-secret"}
REDIRECT = "https://bastion.example.com/connect/callback"
EXAMPLE = """
connections:
  - name: github
    type: oauth
    preset: github
    client_id: Iv1.abc
    client_secret: ${GH_SECRET}
  - name: salesforce
    type: oauth
    preset: salesforce
    sandbox: true
    client_id: 3MVG9
    client_secret: ${SF_SECRET}
  - name: tickets
    type: api_key
    label: Ticket desk
    instructions: Create a key under Profile > API keys.
upstreams:
  - name: sf
    http: {url: https://mcp.example.com/sf}
    auth: {type: user_oauth, connection: salesforce}
  - name: desk
    http: {url: https://mcp.example.com/desk}
    auth: {type: user_api_key, connection: tickets}
"""


def oauth(**kw: Any) -> dict[str, Any]:
    return {"name": "crm", "type": "oauth", "client_id": "cid", "client_secret": "s3cret", **kw}


def config_error(connections: list[dict[str, Any]], upstreams: str = "") -> str:
    import yaml

    text = yaml.safe_dump({"connections": connections}) + upstreams
    with pytest.raises(ConfigError) as err:
        load_config_text(text, {})
    return str(err.value)


def resolved(**kw: Any) -> ResolvedConnection:
    return resolve(OAuthConnection.model_validate(oauth(**kw)))


def authorize_params(connection: ResolvedConnection, scopes: list[str] | None = None) -> dict[str, list[str]]:
    url = Providers([connection]).get(connection.name)
    assert url is not None
    return parse_qs(urlsplit(url.authorization_url("st", "ch", REDIRECT, scopes)).query)


def test_the_documented_example_loads_and_resolves() -> None:
    settings = load_config_text(EXAMPLE, ENV)
    github, salesforce, tickets = (resolve(c) for c in settings.connections)
    assert github.label == "GitHub"
    assert github.scopes == ("read:user",)
    assert github.oauth is not None
    assert github.oauth.client_secret == "gh-secret"
    assert "gh-secret" not in repr(settings.connections[0])
    assert "gh-secret" not in repr(github)
    assert salesforce.oauth is not None
    assert salesforce.oauth.token_endpoint == "https://test.salesforce.com/services/oauth2/token"
    assert salesforce.oauth.revocation_endpoint == "https://test.salesforce.com/services/oauth2/revoke"
    assert tickets == ResolvedConnection(
        name="tickets",
        type="api_key",
        label="Ticket desk",
        instructions="Create a key under Profile > API keys.",
    )


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if p not in ("oauth", "slack")))
def test_every_preset_works_with_just_an_app_registration(preset: str) -> None:
    connection = resolved(preset=preset)
    assert connection.oauth is not None
    assert connection.oauth.authorization_endpoint
    assert connection.oauth.token_endpoint
    assert connection.oauth.authorization_endpoint.startswith("https://")
    assert connection.label == PRESETS[preset].label
    assert connection.oauth.pkce is True
    params = authorize_params(connection)
    assert params["code_challenge"] == ["ch"]
    assert params["code_challenge_method"] == ["S256"]
    assert params["state"] == ["st"]
    assert params["redirect_uri"] == [REDIRECT]
    assert params["response_type"] == ["code"]
    assert params["client_id"] == ["cid"]


def test_provider_quirks_reach_the_authorization_request() -> None:
    google = authorize_params(resolved(preset="google"))
    assert google["access_type"] == ["offline"]
    assert google["prompt"] == ["consent"]
    assert google["scope"] == ["openid email"]
    atlassian = authorize_params(resolved(preset="atlassian", scopes=["read:jira-work"]))
    assert atlassian["audience"] == ["api.atlassian.com"]
    assert atlassian["prompt"] == ["consent"]
    assert atlassian["scope"] == ["read:jira-work offline_access"]  # a refresh token needs it
    microsoft = resolved(preset="microsoft", tenant="contoso.onmicrosoft.com", scopes=["Mail.Read"])
    assert microsoft.oauth is not None
    assert microsoft.oauth.authorization_endpoint == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    assert microsoft.oauth.revocation_endpoint is None
    assert authorize_params(microsoft)["scope"] == ["Mail.Read offline_access"]
    assert "/common/" in (resolved(preset="microsoft").oauth.token_endpoint or "")  # type: ignore[union-attr]
    slack = authorize_params(resolved(preset="slack", scopes=["search:read", "users:read"]))
    assert slack["user_scope"] == ["search:read,users:read"]
    assert "scope" not in slack
    assert authorize_params(resolved(preset="linear", scopes=["read", "write"]))["scope"] == ["read,write"]
    zoom = resolved(preset="zoom")
    assert zoom.oauth is not None
    assert zoom.oauth.auth_method == "client_secret_basic"
    assert "scope" not in authorize_params(zoom)  # the app's configured scopes apply
    mydomain = resolved(preset="salesforce", instance="https://acme.my.salesforce.com/")
    assert mydomain.oauth is not None
    assert mydomain.oauth.authorization_endpoint == "https://acme.my.salesforce.com/services/oauth2/authorize"
    github = resolved(preset="github", client_id="Iv1 a/b")
    assert github.oauth is not None
    assert github.oauth.revocation_style == "github"
    assert github.oauth.revocation_endpoint == "https://api.github.com/applications/Iv1%20a%2Fb/token"


def test_overrides_win_over_the_preset() -> None:
    connection = resolved(
        preset="google",
        label="Google Drive",
        scopes=["https://www.googleapis.com/auth/drive.readonly"],
        token_endpoint="https://127.0.0.1:9/token",
        token_endpoint_auth_method="client_secret_basic",
        extra_authorize_params={"prompt": "select_account", "hd": "example.com"},
        account_claim="name",
        refresh_margin=300,
    )
    assert connection.label == "Google Drive"
    assert connection.refresh_margin == 300
    assert connection.oauth is not None
    assert connection.oauth.token_endpoint == "https://127.0.0.1:9/token"
    assert connection.oauth.auth_method == "client_secret_basic"
    assert connection.oauth.account_claim == "name"
    params = authorize_params(connection)
    assert params["prompt"] == ["select_account"]
    assert params["hd"] == ["example.com"]
    assert params["access_type"] == ["offline"]
    assert params["scope"] == ["https://www.googleapis.com/auth/drive.readonly"]
    # the scopes asked for on one request (the connect page) replace the connection's
    assert authorize_params(connection, ["openid"])["scope"] == ["openid"]


def test_generic_provider_defaults() -> None:
    public = resolve(
        OAuthConnection.model_validate(
            {
                "name": "wiki",
                "type": "oauth",
                "label": "Wiki",
                "client_id": "bastion",
                "issuer": "https://id.example.com",
            }
        )
    )
    assert public.oauth is not None
    assert public.oauth.auth_method == "none"
    assert public.oauth.pkce
    assert public.scopes == ()
    assert public.oauth.authorization_endpoint is None
    confidential = resolved(
        preset="oauth",
        label="CRM",
        authorization_endpoint="https://crm.example.com/authorize",
        token_endpoint="https://crm.example.com/token",
        scopes=["crm.read"],
        pkce=False,
    )
    assert confidential.oauth is not None
    assert confidential.oauth.auth_method == "client_secret_basic"
    params = authorize_params(confidential)
    assert "code_challenge" not in params
    assert params["scope"] == ["crm.read"]


def test_authorization_url_before_discovery_and_without_a_challenge() -> None:
    connection = resolve(OAuthConnection.model_validate(oauth(label="Wiki", issuer="https://id.example.com")))
    client = Providers([connection]).get("crm")
    assert client is not None
    assert client.uses_pkce
    with pytest.raises(ProviderUnavailable, match="configuration has not been read"):
        client.authorization_url("st", "ch", REDIRECT)
    github = Providers([resolved(preset="github")]).get("crm")
    assert github is not None
    with pytest.raises(ValueError, match="code_challenge is required"):
        github.authorization_url("st", None, REDIRECT)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (oauth(name="Bad_Name"), "connections[0].oauth.name: must start with a lowercase"),
        (oauth(name="callback"), "connections[0].oauth.name: 'callback' is reserved"),
        (oauth(preset="github", client_secret=None), "github needs client_secret"),
        (oauth(preset="nope"), "connections[0].oauth.preset"),
        ({"name": "x", "client_id": "c"}, "connections[0]: Unable to extract tag using discriminator 'type'"),
        (oauth(preset="github", tenant="t"), "tenant is for preset microsoft only"),
        (oauth(preset="github", sandbox=True), "instance and sandbox are for preset salesforce only"),
        (oauth(preset="salesforce", instance="https://a.my.salesforce.com", sandbox=True), "not both"),
        (oauth(), "label is required with preset oauth"),
        (oauth(label="CRM"), "needs authorization_endpoint and token_endpoint, or issuer"),
        (
            oauth(preset="github", token_endpoint="http://evil.example/token"),
            ".token_endpoint: must be an https URL",
        ),
        (oauth(preset="github", issuer="https://x.example#frag"), "must not have a fragment"),
        (oauth(preset="slack"), "slack needs scopes"),
        (oauth(preset="github", scopes=["repo gist"]), ".scopes: 'repo gist' is not a scope"),
        (oauth(preset="github", extra_authorize_params={"state": "x"}), "state is set by Bastion itself"),
        (oauth(preset="github", extra_authorize_params={"a b": "x"}), "a parameter name"),
        (oauth(preset="github", token_endpoint_auth_method="none"), "none must not have a client_secret"),
        (
            oauth(preset="github", client_secret=None, token_endpoint_auth_method="client_secret_post"),
            "client_secret_post needs client_secret",
        ),
        (
            oauth(preset="github", client_secret=None, token_endpoint_auth_method="none", pkce=False),
            "a public client (token_endpoint_auth_method none) needs pkce",
        ),
        (oauth(preset="github", refresh_margin=-1), ".refresh_margin: Input should be greater than or equal"),
        (oauth(preset="github", instructions="x"), ".instructions: unknown key"),
        ({"name": "k", "type": "api_key"}, "connections[0].api_key.label: Field required"),
        ({"name": "k", "type": "api_key", "label": "K", "client_id": "c"}, ".client_id: unknown key"),
        ({"name": "k", "type": "api_key", "label": " "}, "must be 1 to 80 printable characters"),
    ],
)
def test_errors_name_the_key(entry: dict[str, Any], expected: str) -> None:
    assert expected in config_error([entry])


def test_names_are_unique_and_upstreams_name_an_existing_connection_of_their_type() -> None:
    twice = [oauth(preset="github"), {"name": "crm", "type": "api_key", "label": "CRM"}]
    assert "connections[1]: name 'crm' is used twice" in config_error(twice)
    upstream = """
upstreams:
  - name: up
    http: {url: https://mcp.example.com/up}
    auth: {type: user_oauth, connection: %s}
"""
    assert "auth.connection 'nope' is not one of connections" in config_error(
        [oauth(preset="github")], upstream % "nope"
    )
    key = [{"name": "desk", "type": "api_key", "label": "Desk"}]
    assert "needs a connection of type oauth, and 'desk' is api_key" in config_error(key, upstream % "desk")


def test_api_key_connections_have_no_provider() -> None:
    connection = resolve(ApiKeyConnection.model_validate({"name": "k", "type": "api_key", "label": "K"}))
    assert connection.oauth is None
    assert connection.scopes == ()
    assert Providers([connection]).get("k") is None
