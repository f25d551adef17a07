"""Run the real ``bastion serve`` on a free loopback port with a generated configuration."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import REPO_ROOT, free_port, http_process, tail

BASTION = [sys.executable, "-m", "bastion"]


@dataclass
class Gateway:
    base: str
    port: int
    log_path: Path
    state_dir: Path
    config_path: Path
    pid: int | None = None  # the ``bastion serve`` process (for signals)

    def url(self, endpoint: str | None = None) -> str:
        return f"{self.base}/mcp" + (f"/{endpoint}" if endpoint else "")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


def venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def run_gateway(
    tmp: Path,
    upstreams: list[dict[str, Any]],
    *,
    extra: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    storage: str | None = None,
    users: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Gateway]:
    """``extra["auth"]`` is merged into the default ``auth`` block (off, master key in the
    state directory); ``users`` (name → password) are created with the real CLI first."""
    port = port or free_port()
    state = tmp / f"bastion-{port}"
    state.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "public_url": f"http://127.0.0.1:{port}",
        "listen": f"127.0.0.1:{port}",
        "storage": storage or f"sqlite:///{state / 'bastion.db'}",
        "auth": {"enabled": False, "master_key_file": str(state / "master.key")},
        "upstreams": upstreams,
    }
    extra = dict(extra or {})
    config["auth"].update(extra.pop("auth", {}))
    config.update(extra)
    config_path = state / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = state / "bastion.log"
    for name, password in (users or {}).items():
        subprocess.run(
            [*BASTION, "users", "add", name, "--password-stdin", "-c", str(config_path)],
            input=password,
            text=True,
            check=True,
            capture_output=True,
            env=venv_env(env),
            cwd=REPO_ROOT,
        )
    with http_process(
        [*BASTION, "serve", "-c", str(config_path)],
        f"http://127.0.0.1:{port}/healthz",
        log_path,
        env=venv_env(env),
        cwd=REPO_ROOT,
    ) as proc:
        yield Gateway(f"http://127.0.0.1:{port}", port, log_path, state, config_path, proc.pid)
