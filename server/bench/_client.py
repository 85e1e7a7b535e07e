"""A benchmark's WebSocket client: send one goal, read its run to the terminal event.

It speaks the server's protocol as any client does: `message {id, session_id?, text}`,
then `accepted {session_id, run_id}`, then the run's `event` frames until
RunCompleted, RunFailed or RunCancelled. Times are the client's own clock
(`trio.current_time()`, monotonic) from just before the send to the arrival of the
terminal frame. Every frame can be handed to a callback with its arrival time in ns
since the epoch, comparable with the `ts` the server stamps on events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from events import TERMINAL_RUN_TYPES
from server.errors import GoalRejected

Frame = dict[str, Any]
FrameCallback = Callable[[Frame, int], None]


class MessageChannel(Protocol):
    """What the client needs of a WebSocket connection (trio-websocket's has both)."""

    async def send_message(self, message: str | bytes) -> None: ...

    async def get_message(self) -> str | bytes: ...


@dataclass
class GoalRun:
    """One goal as the client saw it; `events` holds the run's event frames when kept."""

    request_id: int | str
    goal: str
    sent_at: float
    sent_ns: int = 0
    session_id: str | None = None
    run_id: str | None = None
    outcome: str | None = None
    finished_at: float | None = None
    requested_ts: int | None = None
    terminal_ts: int | None = None
    terminal_arrived_ns: int | None = None
    events: list[tuple[float, Frame]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Send to terminal frame, on the client's clock (NaN while unfinished)."""
        return float("nan") if self.finished_at is None else self.finished_at - self.sent_at

    @property
    def before_run_s(self) -> float | None:
        """Send to RunRequested's commit (wall clocks): the start the server's run latency
        leaves out (the WebSocket frame, the session and message appends)."""
        return None if self.requested_ts is None else (self.requested_ts - self.sent_ns) / 1e9

    @property
    def after_run_s(self) -> float | None:
        """Terminal event's commit to its frame's arrival: what it leaves out at the end."""
        if self.terminal_ts is None or self.terminal_arrived_ns is None:
            return None
        return (self.terminal_arrived_ns - self.terminal_ts) / 1e9


async def run_goal(
    ws: MessageChannel,
    goal: str,
    request_id: int | str,
    session_id: str | None = None,
    *,
    keep_events: bool = False,
    on_frame: FrameCallback | None = None,
) -> GoalRun:
    """Send `goal` and read frames until its run ends; GoalRejected on an error frame."""
    request: Frame = {"type": "message", "id": request_id, "text": goal}
    if session_id is not None:
        request["session_id"] = session_id
    run = GoalRun(request_id, goal, trio.current_time(), time.time_ns())
    await ws.send_message(json.dumps(request))
    while run.outcome is None:
        frame = json.loads(await ws.get_message())
        arrived_ns = time.time_ns()
        if on_frame is not None:
            on_frame(frame, arrived_ns)
        _take(run, frame, keep_events, arrived_ns)
    return run


def _take(run: GoalRun, frame: Frame, keep_events: bool, arrived_ns: int) -> None:
    kind = frame.get("type")
    if kind == "accepted":
        run.session_id, run.run_id = frame["session_id"], frame["run_id"]
    elif kind == "error":
        raise GoalRejected(str(frame.get("code")), str(frame.get("message")))
    elif kind == "event" and run.run_id and frame.get("stream") == f"run-{run.run_id}":
        if keep_events:
            run.events.append((trio.current_time(), frame))
        kind = frame.get("event_type")
        if kind == "RunRequested":
            run.requested_ts = frame.get("ts")
        elif kind in TERMINAL_RUN_TYPES:
            run.outcome = kind
            run.finished_at = trio.current_time()
            run.terminal_ts, run.terminal_arrived_ns = frame.get("ts"), arrived_ns
