"""`bastion idp test NAME` against a real (Entra-like) IdP: what works says ok, what does not
says what to fix, and the exit status tells scripts which."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import BASTION, venv_env
from tests.support.idp import require_idp_packages, run_idp, secret_client
from tests.support.procs import REPO_ROOT


def _config(tmp: Path, issuer: str, client: dict[str, str], **changes: object) -> Path:
    provider = {
        "name": "entra",
        "preset": "entra",
        "issuer": issuer,
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        **changes,
    }
    path = tmp / f"bastion-{abs(hash(str(changes)))}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "public_url": "https://gw.example.com",
                "listen": "127.0.0.1:8080",
                "storage": f"sqlite:///{tmp}/b.db",
                "identity_providers": [provider],
            }
        )
    )
    return path


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BASTION, "idp", "test", "entra", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=venv_env(),
        cwd=REPO_ROOT,
        check=False,
    )


def test_idp_test_reports_what_works_and_what_to_fix(tmp_path: Path) -> None:
    require_idp_packages()
    callback = "https://gw.example.com/login/idp/entra/callback"
    client = secret_client("bastion-gateway", [callback])
    with run_idp(tmp_path, clients=[client], users={}) as idp:
        good = _run(_config(tmp_path, idp.issuer, client))
        assert good.returncode == 0, good.stdout + good.stderr
        assert f"ok    issuer {idp.issuer}" in good.stdout
        assert "ok    signing keys:" in good.stdout
        assert f"register this redirect URI at the IdP: {callback}" in good.stdout
        assert "ok    client bastion-gateway authenticates" in good.stdout

        wrong_secret = _run(_config(tmp_path, idp.issuer, {**client, "client_secret": "not-the-secret"}))
        assert wrong_secret.returncode == 1
        assert "FIX   client authentication failed" in wrong_secret.stdout

        nowhere = _run(_config(tmp_path, idp.issuer.replace("tenant-a", "no-such-tenant"), client))
        assert nowhere.returncode == 1
        assert "FIX   discovery" in nowhere.stdout

    unknown = subprocess.run(
        [*BASTION, "idp", "test", "okta", "-c", str(_config(tmp_path, "https://idp.example", client))],
        capture_output=True,
        text=True,
        timeout=60,
        env=venv_env(),
        cwd=REPO_ROOT,
        check=False,
    )
    assert unknown.returncode == 1
    assert "no identity provider 'okta' (configured: entra)" in unknown.stdout


@pytest.mark.parametrize("secret", ["s3cr3t"])
def test_the_secret_never_appears_in_the_output(tmp_path: Path, secret: str) -> None:
    require_idp_packages()
    client = secret_client(
        "bastion-gateway", ["https://gw.example.com/login/idp/entra/callback"], secret=secret
    )
    with run_idp(tmp_path, clients=[client], users={}) as idp:
        done = _run(_config(tmp_path, idp.issuer, {**client, "client_secret": "wrong-" + secret}))
    assert secret not in done.stdout + done.stderr
