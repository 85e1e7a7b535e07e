"""The `sessions` projection: each session's messages count, shared context, and a
bounded window of its latest messages for prompts. The full history stays in the log
(stream `session-<id>`); this keeps only what a prompt or a listing needs.
"""

from __future__ import annotations

from typing import Any

from events import RecordedEvent
from projections._base import Projection

DEFAULT_WINDOW = 20
MAX_RUN_IDS = 100


def session_key(session_id: str) -> bytes:
    return b"s/" + session_id.encode()


class SessionsProjection(Projection):
    name = "sessions"
    version = 1

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        super().__init__()
        self.window = window

    def _session(self, record: RecordedEvent) -> dict[str, Any]:
        session_id = record.data["session_id"]
        return self.load(session_key(session_id)) or {
            "session_id": session_id,
            "user": None,
            "client": None,
            "started_ts": record.ts,
            "last_ts": record.ts,
            "closed": False,
            "closed_reason": None,
            "messages": 0,
            "context": {},
            "window": [],
            "runs": [],
        }

    def _store(self, session: dict[str, Any], record: RecordedEvent) -> None:
        session["last_ts"] = record.ts
        self.save(session_key(session["session_id"]), session)

    def _message(self, record: RecordedEvent, role: str) -> None:
        session = self._session(record)
        session["messages"] += 1
        entry = {
            "role": role,
            "text": record.data["text"],
            "position": record.position,
            "ts": record.ts,
        }
        session["window"] = [*session["window"], entry][-self.window :]
        self._store(session, record)

    def _on_SessionStarted(self, record: RecordedEvent) -> None:
        session = self._session(record)
        session["user"] = record.data.get("user")
        session["client"] = record.data.get("client")
        self._store(session, record)

    def _on_UserMessageReceived(self, record: RecordedEvent) -> None:
        self._message(record, "user")

    def _on_AssistantMessageSent(self, record: RecordedEvent) -> None:
        self._message(record, "assistant")

    def _on_ContextUpdated(self, record: RecordedEvent) -> None:
        session = self._session(record)
        session["context"] = {**session["context"], **record.data["values"]}
        self._store(session, record)

    def _on_SessionClosed(self, record: RecordedEvent) -> None:
        session = self._session(record)
        session["closed"] = True
        session["closed_reason"] = record.data.get("reason")
        self._store(session, record)

    def _on_RunRequested(self, record: RecordedEvent) -> None:
        session = self._session(record)
        session["runs"] = [*session["runs"], record.data["run_id"]][-MAX_RUN_IDS:]
        self._store(session, record)
