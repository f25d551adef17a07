"""A throwaway PostgreSQL server for tests that need the production database.

The server comes from the Debian package (``/usr/lib/postgresql/<v>/bin``); it runs as
the ``postgres`` system user (postgres refuses root), with its data directory and
unix socket in a temp dir, listening on 127.0.0.1 on a free port, fsync off. Each
caller creates its own database, so tests never see each other's rows.

Without the binaries the Postgres tests are skipped locally and FAIL when ``CI`` is set
(CI must not silently skip the production database). The session fixture ``pg_server`` is
registered once for the whole suite by ``tests/conftest.py``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.support.procs import free_port

PG_USER = "postgres"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@{self.host}:{self.port}/{database}"

    async def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(host=self.host, port=self.port, user=PG_USER, database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name


def _pg_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(found[-1]).parent if found else None


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv  # already an unprivileged user: postgres runs as us
    if shutil.which("runuser"):
        return ["runuser", "-u", PG_USER, "--", *argv]
    return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--", *argv]


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is an error: install the postgresql package)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _pg_bindir()
    if bindir is None:
        _missing("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(PG_USER)
        except KeyError:
            _missing(f"running as root but there is no {PG_USER!r} system user to run PostgreSQL as")
            raise
    root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    data, sockets, logfile = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (root, sockets):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    port = free_port()

    def run(*argv: str) -> None:
        proc = subprocess.run(_as_pg_user(list(argv)), capture_output=True, text=True, cwd=root, check=False)
        if proc.returncode != 0:
            log = logfile.read_text() if logfile.exists() else ""
            pytest.fail(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", options, "-w", "-t", "30", "start")
    try:
        yield PgServer(host="127.0.0.1", port=port)
    finally:
        subprocess.run(
            _as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
