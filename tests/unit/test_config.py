"""Configuration: the minimal file from the docs works as written; errors name the key;
secrets come from the environment; the published schema and reference are current."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.config import schema_json
from bastion.cli.main import app
from bastion.config import load_config, load_config_text
from bastion.config.reference import reference_markdown
from bastion.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
public_url: http://127.0.0.1:8080
listen: 127.0.0.1:8080
storage: sqlite:///./.bastion/bastion.db      # or postgresql://user:pw@host/db
upstreams:
  - name: time
    stdio: {command: mcp-server-time}
  - name: notes
    http: {url: http://127.0.0.1:9001/mcp}
"""


def test_minimal_file_from_the_issue_works_as_written() -> None:
    settings = load_config_text(MINIMAL, {})
    assert [u.name for u in settings.upstreams] == ["time", "notes"]
    assert settings.upstreams[0].stdio is not None
    assert settings.upstreams[0].stdio.command == "mcp-server-time"
    assert settings.auth.enabled is True  # authentication is on unless switched off


def test_empty_file_gives_defaults() -> None:
    settings = load_config_text("", {})
    assert settings.upstreams == []
    assert settings.listen == "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstreams: [{name: a, http: {url: 'http://x/mcp', bogus: 1}}]",
            "upstreams[0].http.bogus: unknown key",
        ),
        ("bogus_top: 1", "bogus_top: unknown key"),
        ("upstreams: [{name: a, http: {url: 'ftp://x'}}]", "upstreams[0].http.url: must be an http"),
        (
            "upstreams: [{name: Bad_Name, stdio: {command: x}}]",
            "upstreams[0].name: must start with a lowercase",
        ),
        ("upstreams: [{name: a}]", "exactly one of 'http' or 'stdio'"),
        ("upstreams: [{name: a, stdio: {command: x}, http: {url: 'http://x'}}]", "exactly one of"),
        ("upstreams: [{name: a, stdio: {command: x}}, {name: a, stdio: {command: y}}]", "used twice"),
        ("listen: nonsense", "listen: must be host:port"),
        ("storage: mysql://x", "storage: must start with"),
        ("public_url: http://x/prefix", "public_url: must not have a path"),
        (
            "listen: 0.0.0.0:8080\nauth: {enabled: false}",
            "auth.enabled: false is for development on loopback",
        ),
        ("auth: {required_scopes: [admin]}", "auth.required_scopes ['admin'] are not in auth.scopes"),
        ("auth: {scopes: ['a b']}", "auth.scopes: 'a b' is not a valid scope"),
        (
            "upstreams: [{name: a, stdio: {command: x}, required_scopes: [nope]}]",
            "upstream 'a': required_scopes ['nope'] are not in auth.scopes",
        ),
        ("upstreams: [{name: a, http: {url: 'http://x', headers: {Host: y}}}]", "managed by Bastion"),
        ("edge: {max_body_bytes: 10}", "edge.max_body_bytes"),
        ("- just\n- a list", "top level must be a mapping"),
        ("key: [unclosed", "not valid YAML"),
    ],
)
def test_errors_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, {}, "bastion.yaml")
    assert expected in str(exc.value)
    assert "bastion.yaml" in str(exc.value)


def test_env_references_are_substituted_and_missing_ones_named() -> None:
    text = "upstreams: [{name: a, http: {url: 'http://x/mcp', headers: {X-Api-Key: '${API_KEY}'}}}]"
    settings = load_config_text(text, {"API_KEY": "s3cret"})
    assert settings.upstreams[0].http is not None
    assert settings.upstreams[0].http.headers == {"X-Api-Key": "s3cret"}
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, {})
    assert "upstreams[0].http.headers.X-Api-Key" in str(exc.value)
    assert "${API_KEY}" in str(exc.value)
    defaulted = load_config_text("storage: '${DB:-sqlite:///x.db}'", {})
    assert defaulted.storage == "sqlite:///x.db"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml", {})


def test_cli_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: [{name: a, http: {url: 'http://x', timeout: 3}}]")
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "validate", str(good)])
    assert ok.exit_code == 0
    assert "valid (2 upstreams: time, notes)" in ok.output
    failed = runner.invoke(app, ["config", "validate", str(bad)])
    assert failed.exit_code == 2
    assert "upstreams[0].http.timeout" in failed.output


def test_published_schema_and_reference_are_current() -> None:
    assert (REPO / "docs" / "config.schema.json").read_text() == schema_json(), "run `make docs`"
    assert (REPO / "docs" / "configuration.md").read_text() == reference_markdown(), "run `make docs`"


def test_schema_forbids_unknown_keys() -> None:
    import json

    schema = json.loads(schema_json())
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["HttpUpstream"]["additionalProperties"] is False
