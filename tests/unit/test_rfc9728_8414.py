"""Protected Resource Metadata (RFC 9728), AS metadata (RFC 8414) and Bearer challenges
(RFC 6750 §3): exact strings, because MCP clients compare them exactly."""

from __future__ import annotations

import pytest

from bastion.config import load_config_text
from bastion.core.challenge import bearer_challenge
from bastion.oauth.rfc8414 import authorization_server_metadata
from bastion.oauth.rfc9728 import metadata_document, resource_for_path, resources

CONFIG = """
public_url: https://gw.example.com
upstreams:
  - {name: github, title: GitHub, http: {url: "https://up.example/mcp"}}
  - {name: time, stdio: {command: mcp-server-time}}
"""


def test_each_endpoint_is_a_resource_with_its_exact_url() -> None:
    known = resources(load_config_text(CONFIG, {}))
    assert [(r.endpoint, r.resource, r.metadata_url) for r in known] == [
        (
            None,
            "https://gw.example.com/mcp",
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp",
        ),
        (
            "github",
            "https://gw.example.com/mcp/github",
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp/github",
        ),
        (
            "time",
            "https://gw.example.com/mcp/time",
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp/time",
        ),
    ]


def test_well_known_paths_map_to_resources() -> None:
    known = resources(load_config_text(CONFIG, {}))
    github = resource_for_path("/.well-known/oauth-protected-resource/mcp/github", known)
    assert github is not None
    assert github.endpoint == "github"
    root = resource_for_path("/.well-known/oauth-protected-resource", known)
    assert root is not None
    assert root.endpoint is None  # the root fallback describes the aggregate endpoint
    assert resource_for_path("/.well-known/oauth-protected-resource/mcp/nope", known) is None
    assert resource_for_path("/.well-known/oauth-protected-resource/other/github", known) is None
    single = resources(load_config_text(CONFIG + "aggregate: {enabled: false}\n", {}))
    assert (
        resource_for_path("/.well-known/oauth-protected-resource", single) is None
    )  # two upstreams, no aggregate


def test_prm_document() -> None:
    known = resources(load_config_text(CONFIG, {}))
    document = metadata_document(known[1], issuer="https://gw.example.com", scopes=["mcp", "offline_access"])
    assert document == {
        "resource": "https://gw.example.com/mcp/github",
        "authorization_servers": ["https://gw.example.com"],
        "scopes_supported": ["mcp"],
        "bearer_methods_supported": ["header"],
        "resource_name": "GitHub",
    }


def test_as_metadata_has_what_mcp_clients_require() -> None:
    document = authorization_server_metadata("https://gw.example.com", scopes=["mcp"])
    assert document["issuer"] == "https://gw.example.com"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["client_id_metadata_document_supported"] is True
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["response_types_supported"] == ["code"]
    assert document["authorization_endpoint"] == "https://gw.example.com/authorize"
    assert "registration_endpoint" in document
    assert "registration_endpoint" not in authorization_server_metadata(
        "https://x", scopes=[], dynamic_registration=False
    )


def test_challenges() -> None:
    prm = "https://gw.example.com/.well-known/oauth-protected-resource/mcp/github"
    assert bearer_challenge(resource_metadata=prm, scopes=["mcp"]) == (
        f'Bearer scope="mcp", resource_metadata="{prm}"'
    )
    assert bearer_challenge(resource_metadata=prm, error="invalid_token", description='bad "sig"') == (
        f'Bearer error="invalid_token", resource_metadata="{prm}", error_description="bad ?sig?"'
    )
    both = bearer_challenge(
        resource_metadata=prm,
        scopes=["repo:read", "repo:write", "offline_access"],
        error="insufficient_scope",
    )
    assert (
        both == f'Bearer error="insufficient_scope", scope="repo:read repo:write", resource_metadata="{prm}"'
    )
    with pytest.raises(ValueError, match="scope token"):
        bearer_challenge(resource_metadata=prm, scopes=['evil" injected="x'])
