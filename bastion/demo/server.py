"""The Bastion demo MCP server: notes, time, progress and elicitation over stdio.

Run it with ``python -m bastion.demo.server [--notes-file PATH]``. It needs no network: notes
live in one JSON file (written atomically), time zones come from the local tz database.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from mcp.server.mcpserver import (
    AcceptedElicitation,
    CancelledElicitation,
    Context,
    DeclinedElicitation,
    Elicit,
    MCPServer,
    Message,
    Resolve,
    UserMessage,
)
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

DEFAULT_NOTES_FILE = Path(".bastion") / "demo-notes.json"
MAX_TITLE_LENGTH = 200
MAX_BODY_LENGTH = 100_000
MAX_COUNT_DOWN_SECONDS = 10

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
UPSERT = ToolAnnotations(destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False)
TimeZoneName = Annotated[
    str, Field(description="An IANA time zone name such as 'UTC', 'Europe/Paris' or 'America/New_York'.")
]
Seconds = Annotated[int, Field(ge=0, le=MAX_COUNT_DOWN_SECONDS, description="How long to count, 0-10.")]
Title = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TITLE_LENGTH,
        description="The note's title; it is also its key (case-sensitive, unique).",
    ),
]


class Note(BaseModel):
    """One stored note."""

    title: str
    body: str
    created_at: str
    updated_at: str


class NoteStore:
    """Notes kept in one JSON file; every change rewrites the file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Note]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        data: Any = json.loads(raw) if raw.strip() else {}
        notes = data.get("notes", []) if isinstance(data, dict) else []
        return {note.title: note for note in (Note.model_validate(item) for item in notes)}

    def _save(self, notes: dict[str, Note]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": 1, "notes": [note.model_dump() for note in notes.values()]}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, ensure_ascii=False, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def list(self) -> list[Note]:
        with self._lock:
            return sorted(self._load().values(), key=lambda note: note.title.casefold())

    def get(self, title: str) -> Note | None:
        with self._lock:
            return self._load().get(title)

    def put(self, title: str, body: str) -> tuple[Note, bool]:
        """Create or replace a note; returns it and whether it already existed."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            notes = self._load()
            previous = notes.get(title)
            note = Note(
                title=title, body=body, created_at=previous.created_at if previous else now, updated_at=now
            )
            notes[title] = note
            self._save(notes)
            return note, previous is not None

    def delete(self, title: str) -> bool:
        with self._lock:
            notes = self._load()
            if notes.pop(title, None) is None:
                return False
            self._save(notes)
            return True


class Confirmation(BaseModel):
    """Confirm or refuse the proposed action."""

    confirm: bool = Field(description="Tick to go ahead with the action; leave unticked to refuse it.")


class ElicitationUnavailable(BaseModel):
    """Stands in for an answer when the client cannot show an elicitation form."""


async def ask_confirmation(
    action: str, ctx: Context[Any, Any]
) -> Elicit[Confirmation] | ElicitationUnavailable:
    """Ask the user through form elicitation, or say that the client cannot be asked."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    # A bare ``elicitation: {}`` (before modes existed) means form support; url-only does not.
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return ElicitationUnavailable()
    return Elicit(f"Do you want to go ahead with this action?\n\n{action}", Confirmation)


ConfirmationOutcome = Annotated[
    AcceptedElicitation[Confirmation]
    | AcceptedElicitation[ElicitationUnavailable]
    | DeclinedElicitation
    | CancelledElicitation,
    Resolve(ask_confirmation),
]


def _missing_note(title: str, store: NoteStore) -> str:
    titles = [note.title for note in store.list()]
    known = ", ".join(repr(t) for t in titles[:20]) if titles else "none yet"
    return f"No note titled {title!r}. Existing titles: {known}."


def create_server(notes_file: Path = DEFAULT_NOTES_FILE) -> MCPServer:
    """Build the demo server around a note store kept in ``notes_file``."""
    store = NoteStore(notes_file)
    server: MCPServer = MCPServer(
        name="bastion-demo",
        title="Bastion demo server",
        instructions=(
            "A small notebook plus a few utilities. Use add_note/list_notes/read_note/delete_note "
            "to keep notes across calls, current_time for the time in any IANA zone, count_down to "
            "watch progress updates, and confirm_action to ask the user a yes/no question."
        ),
        version="1.0.0",
        log_level="WARNING",
    )
    _register_note_tools(server, store)
    _register_utility_tools(server)
    _register_notes_resources_and_prompt(server, store)
    return server


def _register_note_tools(server: MCPServer, store: NoteStore) -> None:
    @server.tool(annotations=UPSERT)
    def add_note(title: Title, body: Annotated[str, Field(max_length=MAX_BODY_LENGTH)]) -> str:
        """Save a note under a title, replacing any existing note with the same title.

        Use this to remember something for later in the conversation or in later sessions.
        The body is free text (Markdown is fine). Returns a one-line confirmation.
        """
        note, existed = store.put(title, body)
        verb = "Replaced" if existed else "Saved"
        return f"{verb} note {note.title!r} ({len(note.body)} characters)."

    @server.tool(annotations=READ_ONLY)
    def list_notes() -> str:
        """List the titles of all saved notes, with when each was last updated.

        Call this first when you do not know the exact title; then use read_note to get a body.
        """
        notes = store.list()
        if not notes:
            return "There are no notes yet. Use add_note to create one."
        lines = [f"- {note.title} (updated {note.updated_at}, {len(note.body)} chars)" for note in notes]
        return f"{len(notes)} note(s):\n" + "\n".join(lines)

    @server.tool(annotations=READ_ONLY)
    def read_note(title: Title) -> str:
        """Return the full body of the note with exactly this title (case-sensitive).

        If no such note exists the error lists the titles that do exist.
        """
        note = store.get(title)
        if note is None:
            raise ToolError(_missing_note(title, store))
        return note.body

    @server.tool(annotations=DESTRUCTIVE)
    def delete_note(title: Title) -> str:
        """Permanently delete the note with exactly this title (case-sensitive).

        This cannot be undone. If no such note exists the error lists the titles that do exist.
        """
        if not store.delete(title):
            raise ToolError(_missing_note(title, store))
        return f"Deleted note {title!r}."


def _register_utility_tools(server: MCPServer) -> None:
    @server.tool(annotations=READ_ONLY)
    def current_time(
        timezone: TimeZoneName = "UTC",
    ) -> str:
        """Return the current date and time in the given IANA time zone, in ISO 8601 with its UTC offset.

        Uses the machine's clock and time zone database; no network access.
        """
        name = timezone.strip()
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"Unknown time zone {timezone!r}. Use an IANA name such as 'UTC', 'Europe/Berlin' "
                "or 'Asia/Tokyo' (not an abbreviation like 'CET' or 'PST')."
            ) from None
        now = datetime.now(zone)
        return f"{now.isoformat(timespec='seconds')} ({name}, {now.strftime('%A')})"

    @server.tool(annotations=READ_ONLY)
    async def count_down(
        seconds: Seconds,
        ctx: Context[Any, Any],
    ) -> str:
        """Count down from `seconds` to zero, one second at a time, reporting progress every second.

        Useful to check that progress notifications reach the user. Takes `seconds` seconds.
        """
        for elapsed in range(seconds):
            await ctx.report_progress(elapsed, seconds, f"{seconds - elapsed} second(s) left")
            await anyio.sleep(1)
        await ctx.report_progress(seconds, seconds, "Done")
        return f"Counted down {seconds} second(s)."

    @server.tool(annotations=READ_ONLY)
    async def confirm_action(
        action: Annotated[str, Field(min_length=1, max_length=2_000, description="What you want to do.")],
        answer: ConfirmationOutcome,
    ) -> str:
        """Ask the user to confirm an action before you take it, and report what they chose.

        The user sees `action` in a form with a single yes/no checkbox. The result says whether they
        confirmed, refused, dismissed the form, or could not be asked because their client does not
        support forms (then ask them in the conversation instead). This tool itself changes nothing.
        """
        if isinstance(answer, DeclinedElicitation):
            return f"The user declined to answer; do not proceed with: {action}"
        if isinstance(answer, CancelledElicitation):
            return f"The user dismissed the question; do not proceed with: {action}"
        data = answer.data
        if isinstance(data, ElicitationUnavailable):
            return (
                "Could not ask: this client does not support elicitation forms. "
                f"Ask the user in the conversation whether to proceed with: {action}"
            )
        if data.confirm:
            return f"The user confirmed: {action}"
        return f"The user refused; do not proceed with: {action}"


def _register_notes_resources_and_prompt(server: MCPServer, store: NoteStore) -> None:
    @server.resource(
        "notes://index",
        name="notes-index",
        title="All notes",
        description="Titles, sizes and timestamps of every saved note, as JSON.",
        mime_type="application/json",
    )
    def notes_index() -> str:
        entries = [
            {
                "title": note.title,
                "uri": f"notes://{quote(note.title, safe='')}",
                "characters": len(note.body),
                "updated_at": note.updated_at,
            }
            for note in store.list()
        ]
        return json.dumps({"notes": entries}, ensure_ascii=False)

    @server.resource(
        "notes://{title}",
        name="note",
        title="One note",
        description="The body of one saved note, by title.",
        mime_type="text/markdown",
    )
    def note_resource(title: str) -> str:
        note = store.get(title)
        if note is None:
            raise ResourceNotFoundError(_missing_note(title, store))
        return note.body

    @server.prompt(title="Summarize my notes")
    def summarize_notes(
        focus: Annotated[str, Field(description="Optional topic to focus the summary on.")] = "",
    ) -> list[Message]:
        """Ask the model for a short summary of every saved note (optionally about one topic)."""
        notes = store.list()
        if not notes:
            return [UserMessage("I have no saved notes yet. Tell me how to add one with the add_note tool.")]
        parts = [f"## {note.title}\n\n{note.body}" for note in notes]
        topic = f", focusing on {focus.strip()}" if focus.strip() else ""
        return [
            UserMessage(
                f"Summarize my {len(notes)} note(s) below in a few bullet points{topic}. "
                "Point out open questions or to-dos.\n\n" + "\n\n".join(parts)
            )
        ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bastion.demo.server", description=__doc__)
    parser.add_argument(
        "--notes-file",
        type=Path,
        default=DEFAULT_NOTES_FILE,
        help=f"JSON file to keep notes in (default: {DEFAULT_NOTES_FILE})",
    )
    args = parser.parse_args(argv)
    create_server(args.notes_file).run("stdio")


if __name__ == "__main__":
    main()
