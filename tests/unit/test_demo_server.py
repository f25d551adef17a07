"""The demo server (``python -m bastion.demo.server``) driven over real stdio by the SDK's client."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters

REPO_ROOT = Path(__file__).resolve().parents[2]
ERAS = ["legacy", "2026-07-28"]

ElicitFn = Callable[[ClientRequestContext, types.ElicitRequestParams], Any]


def _params(notes_file: Path) -> StdioServerParameters:
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "TZ"}}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "bastion.demo.server", "--notes-file", str(notes_file)],
        cwd=str(REPO_ROOT),
        env=env,
    )


@asynccontextmanager
async def demo(notes_file: Path, mode: str, elicit: ElicitFn | None = None) -> AsyncIterator[Client]:
    async with Client(_params(notes_file), mode=mode, elicitation_callback=elicit) as client:
        yield client


def text(result: types.CallToolResult | types.GetPromptResult) -> str:
    if isinstance(result, types.GetPromptResult):
        content = result.messages[0].content
        assert isinstance(content, types.TextContent)
        return content.text
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@pytest.mark.parametrize("mode", ERAS)
async def test_notes_round_trip_and_persist_atomically(tmp_path: Path, mode: str) -> None:
    notes_file = tmp_path / "sub" / "notes.json"
    async with demo(notes_file, mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) >= {"add_note", "list_notes", "read_note", "delete_note", "current_time"}
        assert all(tool.description and len(tool.description) > 40 for tool in tools.values())

        assert "Saved note 'groceries'" in text(
            await client.call_tool("add_note", {"title": "groceries", "body": "milk"})
        )
        assert "Replaced" in text(await client.call_tool("add_note", {"title": "groceries", "body": "eggs"}))
        await client.call_tool("add_note", {"title": "trip plan", "body": "# Rome\nbook hotel"})
        listing = text(await client.call_tool("list_notes", {}))
        assert "2 note(s)" in listing
        assert "groceries" in listing
        assert "trip plan" in listing
        assert text(await client.call_tool("read_note", {"title": "groceries"})) == "eggs"

        missing = await client.call_tool("read_note", {"title": "nope"})
        assert missing.is_error
        assert "'groceries'" in text(missing)
        assert (await client.call_tool("add_note", {"title": "", "body": "x"})).is_error

    stored = json.loads(notes_file.read_text(encoding="utf-8"))
    assert {note["title"] for note in stored["notes"]} == {"groceries", "trip plan"}
    assert [p.name for p in notes_file.parent.iterdir()] == ["notes.json"]  # no temp files left behind

    async with demo(notes_file, mode) as client:  # a new process sees the saved notes
        assert text(await client.call_tool("read_note", {"title": "trip plan"})) == "# Rome\nbook hotel"
        assert "Deleted" in text(await client.call_tool("delete_note", {"title": "trip plan"}))
        assert (await client.call_tool("delete_note", {"title": "trip plan"})).is_error
        assert "1 note(s)" in text(await client.call_tool("list_notes", {}))


@pytest.mark.parametrize("mode", ERAS)
async def test_resources_and_prompt(tmp_path: Path, mode: str) -> None:
    async with demo(tmp_path / "notes.json", mode) as client:
        empty = await client.get_prompt("summarize_notes", {})
        assert "no saved notes" in text(empty)
        await client.call_tool("add_note", {"title": "weekly sync", "body": "ship the demo"})

        index = await client.read_resource("notes://index")
        first = index.contents[0]
        assert isinstance(first, types.TextResourceContents)
        assert json.loads(first.text)["notes"][0]["uri"] == "notes://weekly%20sync"

        note = await client.read_resource("notes://weekly%20sync")
        body = note.contents[0]
        assert isinstance(body, types.TextResourceContents)
        assert body.text == "ship the demo"

        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["notes://{title}"]

        prompt = await client.get_prompt("summarize_notes", {"focus": "deadlines"})
        assert "ship the demo" in text(prompt)
        assert "deadlines" in text(prompt)


@pytest.mark.parametrize("mode", ERAS)
async def test_current_time(tmp_path: Path, mode: str) -> None:
    async with demo(tmp_path / "notes.json", mode) as client:
        utc = text(await client.call_tool("current_time", {}))
        assert "+00:00 (UTC" in utc
        tokyo = text(await client.call_tool("current_time", {"timezone": "Asia/Tokyo"}))
        assert "+09:00 (Asia/Tokyo" in tokyo
        unknown = await client.call_tool("current_time", {"timezone": "Mars/Olympus_Mons"})
        assert unknown.is_error
        assert "Unknown time zone 'Mars/Olympus_Mons'" in text(unknown)


@pytest.mark.parametrize("mode", ERAS)
async def test_count_down_reports_progress(tmp_path: Path, mode: str) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with demo(tmp_path / "notes.json", mode) as client:
        result = await client.call_tool("count_down", {"seconds": 2}, progress_callback=on_progress)
        assert text(result) == "Counted down 2 second(s)."
        assert [(p, t) for p, t, _ in updates] == [(0, 2), (1, 2), (2, 2)]
        assert updates[-1][2] == "Done"
        assert (await client.call_tool("count_down", {"seconds": 11})).is_error


ANSWERS: list[tuple[str, dict[str, Any] | None, str]] = [
    ("accept", {"confirm": True}, "The user confirmed: drop table users"),
    ("accept", {"confirm": False}, "The user refused"),
    ("decline", None, "The user declined"),
    ("cancel", None, "The user dismissed"),
]


@pytest.mark.parametrize("mode", ERAS)
async def test_confirm_action_elicits(tmp_path: Path, mode: str) -> None:
    asked: list[str] = []
    answer: list[types.ElicitResult] = []

    async def elicit(_ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert params.requested_schema["properties"]["confirm"]["type"] == "boolean"
        asked.append(params.message)
        return answer[-1]

    async with demo(tmp_path / "notes.json", mode, elicit) as client:
        for action, content, expected in ANSWERS:
            answer.append(types.ElicitResult(action=action, content=content))  # type: ignore[arg-type]
            result = await client.call_tool("confirm_action", {"action": "drop table users"})
            assert not result.is_error
            assert expected in text(result)
            assert len(asked) == len(answer)
            assert "drop table users" in asked[-1]


@pytest.mark.parametrize("mode", ERAS)
async def test_confirm_action_without_elicitation_support(tmp_path: Path, mode: str) -> None:
    async with demo(tmp_path / "notes.json", mode) as client:
        result = await client.call_tool("confirm_action", {"action": "send the invoice"})
        assert not result.is_error
        assert "does not support elicitation" in text(result)
        assert "send the invoice" in text(result)
