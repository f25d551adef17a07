"""bastion.upstream.stdio: supervised stdio MCP servers, against real child processes.

The children live in tests/fixtures/stdio_children/; backoffs are tiny so the whole file
runs in a few seconds of real time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.config.model import Restart, StdioUpstream, Timeouts
from bastion.core.errors import UpstreamFailed, UpstreamUnavailable
from bastion.upstream.stdio import StdioProcess

CHILDREN = Path(__file__).resolve().parent.parent / "fixtures" / "stdio_children"
UPSTREAM = "kids"
LOGGER = f"bastion.upstream.{UPSTREAM}"
FAST_RESTART = Restart(initial_backoff=0.05, max_backoff=0.4, stable_after=5.0)


def child_spec(script: str, *args: str, **overrides: Any) -> StdioUpstream:
    values: dict[str, Any] = {
        "command": sys.executable,
        "args": [str(CHILDREN / script), *args],
        "restart": FAST_RESTART,
        "shutdown_grace": 0.5,
    }
    values.update(overrides)
    return StdioUpstream(**values)


class Inbox:
    """on_message target: keeps every message, lets a test await the response to an id."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._changed.set()

    async def response(self, request_id: object, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if message.get("id") == request_id:
                        return message
                self._changed.clear()
                await self._changed.wait()


async def call(proc: StdioProcess, inbox: Inbox, request_id: object, method: str, params: Any = None) -> Any:
    await proc.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
    return (await inbox.response(request_id))["result"]


Factory = Callable[..., tuple[StdioProcess, Inbox]]


@pytest.fixture
async def spawn() -> AsyncIterator[Factory]:
    made: list[StdioProcess] = []

    def factory(spec: StdioUpstream, *, key: str = "shared", **kwargs: Any) -> tuple[StdioProcess, Inbox]:
        inbox = Inbox()
        proc = StdioProcess(UPSTREAM, spec, key=key, on_message=inbox, **kwargs)
        made.append(proc)
        return proc, inbox

    yield factory
    for proc in made:
        await proc.stop()


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs: absent, or a zombie that is not ours to reap."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    state, ppid = fields[0], int(fields[1])
    return state == "Z" and ppid != os.getpid()


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def stderr_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and ": stderr: " in r.getMessage()]


# -- traffic ----------------------------------------------------------------------------------------


async def test_round_trip_in_order(spawn: Factory) -> None:
    proc, inbox = spawn(child_spec("echo.py"))
    await proc.start()
    assert proc.running
    assert proc.pid is not None
    assert proc.restarts == 0

    assert await call(proc, inbox, 1, "echo", {"hello": "wörld"}) == {"hello": "wörld"}
    for i in range(2, 302):
        await proc.send({"jsonrpc": "2.0", "id": i, "method": "echo", "params": {"n": i}})
    await inbox.response(301)
    assert [m["id"] for m in inbox.messages] == list(range(1, 302))
    assert all(m["result"] == {"n": m["id"]} for m in inbox.messages[1:])


async def test_raw_bytes_with_newlines_keep_the_framing(spawn: Factory) -> None:
    proc, inbox = spawn(child_spec("echo.py"))
    await proc.start()
    pretty = (
        b'{\n  "jsonrpc": "2.0",\r\n  "id": "raw",\n  "method": "echo",\n  "params": {"a": [1,\n 2]}\n}\n'
    )
    await proc.send(pretty)
    assert (await inbox.response("raw"))["result"] == {"a": [1, 2]}


async def test_five_megabyte_message_arrives_intact(spawn: Factory) -> None:
    proc, inbox = spawn(child_spec("big_message.py"))
    await proc.start()
    result = await call(proc, inbox, 1, "big")
    pattern = "0123456789abcdefghijklmnopqrstuvwxyz"
    size = 5 * 1024 * 1024
    assert result["size"] == size
    assert result["text"] == (pattern * (size // len(pattern) + 1))[:size]
    assert await call(proc, inbox, 2, "echo", {"after": True}) == {"after": True}


async def test_garbage_lines_are_logged_and_skipped(spawn: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    proc, inbox = spawn(child_spec("garbage.py"))
    await proc.start()
    for i in range(3):
        assert await call(proc, inbox, i, "echo", {"i": i}) == {"i": i}
    assert [m["id"] for m in inbox.messages] == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("skipping non-JSON stdout line: 'this is not json'" in w for w in warnings)
    assert any("skipping non-object stdout line: '[1, 2, 3]'" in w for w in warnings)
    assert all(len(w) < 400 for w in warnings)


async def test_send_fails_when_child_does_not_read_stdin(spawn: Factory) -> None:
    spec = child_spec("ignore_sigterm.py", timeouts=Timeouts(request=0.3), shutdown_grace=0.05)
    proc, _ = spawn(spec)
    await proc.start()
    big = {"jsonrpc": "2.0", "method": "notifications/x", "params": {"data": "y" * (1 << 20)}}
    started = time.monotonic()
    for _ in range(3):  # the second and third fail before buffering anything more
        with pytest.raises(UpstreamFailed, match="not reading its input"):
            await proc.send(big)
    assert time.monotonic() - started < 3


async def test_send_before_start_is_unavailable(spawn: Factory) -> None:
    proc, _ = spawn(child_spec("echo.py"))
    assert not proc.running
    assert proc.pid is None
    with pytest.raises(UpstreamUnavailable, match=f"upstream '{UPSTREAM}'"):
        await proc.send({"jsonrpc": "2.0", "method": "x"})


# -- start failures ---------------------------------------------------------------------------------


async def test_exit_at_start_raises_with_stderr_in_detail(
    spawn: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a window wider than a Python start-up on a loaded machine: the child always dies inside it
    monkeypatch.setattr("bastion.upstream.stdio.FAST_FAIL_WINDOW", 3.0)
    proc, _ = spawn(child_spec("exit_at_start.py"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await proc.start()
    error = caught.value
    assert error.upstream == UPSTREAM
    assert f"upstream '{UPSTREAM}'" in error.message
    assert "code 3" in error.message
    assert "EXAMPLE_API_KEY" in error.detail
    assert "EXAMPLE_API_KEY" not in error.message
    await asyncio.sleep(0.2)
    assert not proc.running
    assert proc.restarts == 0  # start() failed fast: nothing keeps retrying


@pytest.mark.parametrize("problem", ["missing command", "not executable", "missing cwd"])
async def test_unspawnable_command_raises(spawn: Factory, tmp_path: Path, problem: str) -> None:
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\nexec cat\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    spec = {
        "missing command": StdioUpstream(command="bastion-no-such-command-xyz"),
        "not executable": StdioUpstream(command=str(script)),
        "missing cwd": StdioUpstream(command=sys.executable, cwd=str(tmp_path / "nope")),
    }[problem]
    proc, _ = spawn(spec)
    with pytest.raises(UpstreamUnavailable, match=f"upstream '{UPSTREAM}': could not start") as caught:
        await proc.start()
    assert caught.value.upstream == UPSTREAM


async def test_tolerant_start_keeps_retrying_without_spinning(spawn: Factory) -> None:
    proc, _ = spawn(child_spec("exit_at_start.py"))
    cpu = time.process_time()
    await proc.start(fail_fast=False)
    assert not proc.running
    with pytest.raises(UpstreamUnavailable, match="restarting"):
        await proc.wait_running(0.1)
    await asyncio.sleep(1.2)
    # backoff 0.05, 0.1, 0.2, 0.4, 0.4, ... (+ spawn time): a handful, not hundreds
    assert 2 <= proc.restarts <= 8
    assert time.process_time() - cpu < 0.6
    await proc.stop()
    settled = proc.restarts
    await asyncio.sleep(0.3)
    assert proc.restarts == settled


# -- supervision ------------------------------------------------------------------------------------


async def test_restart_after_crash_with_backoff_and_handshake(spawn: Factory) -> None:
    loop = asyncio.get_running_loop()
    started: list[float] = []
    exited: list[tuple[float, int | None]] = []
    holder: dict[str, tuple[StdioProcess, Inbox]] = {}

    async def on_started() -> None:  # the caller's "initialize" handshake: traffic works here
        proc, inbox = holder["p"]
        n = len(started)
        assert await call(proc, inbox, f"init-{n}", "initialize", {"n": n}) == {"n": n}
        assert not proc.running
        started.append(loop.time())

    proc, inbox = spawn(
        child_spec("crash_after.py", "3"),
        on_started=on_started,
        on_exited=lambda code: exited.append((loop.time(), code)),
    )
    holder["p"] = (proc, inbox)
    await proc.start()
    assert len(started) == 1
    for round_ in range(1, 3):
        pid = proc.pid
        await call(proc, inbox, f"a{round_}", "echo")
        await proc.send({"jsonrpc": "2.0", "id": f"b{round_}", "method": "echo", "params": {}})
        await inbox.response(f"b{round_}")  # the 3rd request: answered, then the crash
        await eventually(lambda: len(exited) == round_)
        await proc.wait_running(5)
        assert proc.pid != pid
        assert proc.restarts == round_
        assert len(started) == round_ + 1
        assert [code for _, code in exited] == [7] * round_

    gaps = [start - exit_at for (exit_at, _), start in zip(exited, started[1:], strict=True)]
    assert gaps[0] >= 0.05  # initial_backoff
    assert gaps[1] >= 0.10  # doubled: the process did not stay up stable_after
    assert gaps[1] < 2.0
    # every response before a crash was delivered, before on_exited ran
    ids = [m["id"] for m in inbox.messages]
    assert ids.index("b1") < ids.index("init-1")
    assert ids.index("b2") < ids.index("init-2")


async def test_stable_process_resets_backoff(spawn: Factory) -> None:
    loop = asyncio.get_running_loop()
    # stable_after well above a start-up on a loaded machine, so a short life is never taken for stable
    restart = Restart(initial_backoff=0.05, max_backoff=1.0, stable_after=1.0)
    events: list[tuple[str, float]] = []

    async def on_started() -> None:
        events.append(("up", loop.time()))

    proc, inbox = spawn(
        child_spec("crash_after.py", "1", restart=restart),
        on_started=on_started,
        on_exited=lambda code: events.append(("down", loop.time())),
    )
    await proc.start()
    await asyncio.sleep(1.05)  # stays up past stable_after
    await proc.send({"jsonrpc": "2.0", "id": 1, "method": "echo"})
    await eventually(lambda: len(events) == 3)  # up, down, up
    await proc.send({"jsonrpc": "2.0", "id": 2, "method": "echo"})  # dies at once this time
    await eventually(lambda: len(events) == 5)
    await asyncio.sleep(1.05)
    await proc.send({"jsonrpc": "2.0", "id": 3, "method": "echo"})
    await eventually(lambda: len(events) == 7)
    kinds = [kind for kind, _ in events]
    assert kinds == ["up", "down", "up", "down", "up", "down", "up"]
    times = [t for _, t in events]
    first, second, third = times[2] - times[1], times[4] - times[3], times[6] - times[5]
    assert 0.05 <= first < 0.3
    assert second >= 0.1  # doubled after a short life
    assert third < second  # reset after a stable life
    await inbox.response(3)


async def test_repeated_crash_at_restart_backs_off_until_stop(spawn: Factory, tmp_path: Path) -> None:
    codes: list[int | None] = []
    proc, _ = spawn(child_spec("flaky_start.py", str(tmp_path / "marker")), on_exited=codes.append)
    await proc.start()
    cpu = time.process_time()
    await proc.send({"jsonrpc": "2.0", "id": 1, "method": "exit"})
    await asyncio.sleep(1.2)
    assert codes[0] == 5
    assert set(codes[1:]) == {3}
    assert 2 <= proc.restarts <= 8
    assert time.process_time() - cpu < 0.6
    await proc.stop()
    settled = proc.restarts
    await asyncio.sleep(0.3)
    assert proc.restarts == settled


async def test_unsupervised_exit_is_reported_not_restarted(spawn: Factory) -> None:
    codes: list[int | None] = []
    proc, inbox = spawn(child_spec("crash_after.py", "1"), supervise=False, on_exited=codes.append)
    await proc.start()
    await call(proc, inbox, 1, "echo")
    await eventually(lambda: codes == [7])
    await asyncio.sleep(0.2)
    assert proc.restarts == 0
    assert not proc.running
    with pytest.raises(UpstreamUnavailable, match="not running"):
        await proc.wait_running(1)


# -- shutdown ---------------------------------------------------------------------------------------


async def test_stop_kills_the_group_and_leaves_no_zombie(spawn: Factory) -> None:
    proc, inbox = spawn(child_spec("grandchild.py"))
    await proc.start()
    pid = proc.pid
    assert pid is not None
    grandchild = (await call(proc, inbox, 1, "grandchild"))["pid"]
    assert not process_gone(grandchild)

    await asyncio.gather(proc.stop(), proc.stop())
    assert proc.pid is None
    assert not proc.running
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie of ours
    assert process_gone(pid)
    await eventually(lambda: process_gone(grandchild))

    await proc.stop()  # idempotent
    with pytest.raises(UpstreamUnavailable, match="not running"):
        await proc.send({"jsonrpc": "2.0", "method": "x"})
    with pytest.raises(UpstreamUnavailable, match="stopped"):
        await proc.wait_running(1)
    with pytest.raises(UpstreamUnavailable, match="stopped"):
        await proc.start()


async def test_stop_escalates_to_sigkill(spawn: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    proc, _ = spawn(child_spec("ignore_sigterm.py", shutdown_grace=0.2))
    await proc.start()
    pid = proc.pid
    assert pid is not None
    began = time.monotonic()
    await proc.stop()
    assert 0.4 <= time.monotonic() - began < 3  # grace after stdin close, grace after SIGTERM
    assert process_gone(pid)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("sending SIGTERM" in m for m in messages)
    assert any("sending SIGKILL" in m for m in messages)


async def test_stop_while_restarting(spawn: Factory) -> None:
    proc, inbox = spawn(child_spec("crash_after.py", "1", restart=Restart(initial_backoff=5.0)))
    await proc.start()
    await call(proc, inbox, 1, "echo")
    await eventually(lambda: proc.pid is None)
    waiter = asyncio.create_task(proc.wait_running(10))
    await asyncio.sleep(0.05)
    await proc.stop()
    with pytest.raises(UpstreamUnavailable, match="stopped"):
        await waiter


# -- logs and environment ---------------------------------------------------------------------------


async def test_stderr_goes_to_the_log(spawn: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    proc, _ = spawn(child_spec("echo.py"))
    await proc.start()
    await eventually(lambda: any("echo server ready" in m for m in stderr_records(caplog)))
    record = next(r for r in caplog.records if "echo server ready" in r.getMessage())
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"upstream={UPSTREAM} key=shared: stderr: echo server ready"


async def test_stderr_flood_is_rate_limited(spawn: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    proc, inbox = spawn(child_spec("stderr_flood.py", "5000"))
    await proc.start()
    await eventually(lambda: any("suppressed" in m for m in stderr_records(caplog)))
    lines = stderr_records(caplog)
    assert len(lines) <= 110
    long_line = next(m for m in lines if "xxxx" in m)
    assert long_line.endswith("x" * 2000)
    assert "x" * 2001 not in long_line
    suppressed = next(m for m in lines if "suppressed" in m)
    assert int(suppressed.rsplit("suppressed ", 1)[1].split()[0]) >= 4800
    assert await call(proc, inbox, 1, "echo", {"ok": 1}) == {"ok": 1}  # still serving


async def test_env_merging_and_secrets_stay_out_of_logs(
    spawn: Factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    monkeypatch.setenv("BASTION_TEST_PARENT_VAR", "from-parent")
    secret = "sk-very-secret-per-user-token"
    session_key = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    names = ["BASTION_TEST_PARENT_VAR", "SPEC_ONLY", "OVERRIDDEN", "PATH"]
    results = {}
    for inherit in (True, False):
        spec = child_spec("echo.py", env={"SPEC_ONLY": "spec", "OVERRIDDEN": "spec"}, inherit_env=inherit)
        proc, inbox = spawn(spec, key=session_key, extra_env={"OVERRIDDEN": secret})
        await proc.start()
        results[inherit] = await call(proc, inbox, 1, "env", {"names": names})
        await proc.stop()

    assert results[True] == {
        "BASTION_TEST_PARENT_VAR": "from-parent",
        "SPEC_ONLY": "spec",
        "OVERRIDDEN": secret,
        "PATH": os.environ["PATH"],
    }
    assert results[False] == {
        "BASTION_TEST_PARENT_VAR": None,
        "SPEC_ONLY": "spec",
        "OVERRIDDEN": secret,
        "PATH": os.environ["PATH"],
    }
    text = caplog.text
    assert "OVERRIDDEN" in text  # names, at debug
    assert secret not in text
    assert session_key not in text
    assert all(session_key not in str(r.__dict__) for r in caplog.records)
    assert "key=h:" in text


# -- a real MCP server ------------------------------------------------------------------------------


async def test_real_mcp_server_time(spawn: Factory) -> None:
    holder: dict[str, tuple[StdioProcess, Inbox]] = {}
    initialized: list[dict[str, Any]] = []

    async def initialize() -> None:
        proc, inbox = holder["p"]
        result = await call(
            proc,
            inbox,
            0,
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bastion-tests", "version": "0.1.0"},
            },
        )
        initialized.append(result)
        await proc.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    command = str(Path(sys.executable).parent / "mcp-server-time")
    spec = StdioUpstream(command=command, args=["--local-timezone", "UTC"], shutdown_grace=1.0)
    proc, inbox = spawn(spec, on_started=initialize)
    holder["p"] = (proc, inbox)
    await proc.start()
    assert initialized[0]["serverInfo"]["name"]
    assert "tools" in initialized[0]["capabilities"]
    tools = await call(proc, inbox, 1, "tools/list")
    assert "get_current_time" in {tool["name"] for tool in tools["tools"]}
