"""Per-connection and per-server limits of the WebSocket API."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may do; breaches get an `error` frame, not a dropped connection,
    except for limits on the connection itself (count per token, hard frame size)."""

    max_frame_bytes: int = 1 << 20
    requests_per_second: float = 20.0
    max_connections: int = 100
    max_connections_per_token: int = 50
    max_runs_per_session: int = 4
    max_subscriptions: int = 32
    # `index_documents` passes one connection may have in progress at once.
    max_index_jobs: int = 1
    send_queue_frames: int = 256
    slow_client_timeout_s: float = 10.0
    # With auth on, a connection without a valid hello this long after the handshake
    # is closed (1008); one that sends no frame for idle_timeout_s and follows nothing
    # is closed too (1001).
    hello_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0

    @property
    def hard_frame_bytes(self) -> int:
        """Frames past this are refused by the WebSocket layer itself (close 1009)."""
        return self.max_frame_bytes * 4


class RequestBucket:
    """Token bucket of requests per second (burst of one second's worth)."""

    def __init__(self, rate: float, clock: type[time.struct_time] | None = None) -> None:
        self._rate = rate
        self._tokens = max(1.0, rate)
        self._capacity = max(1.0, rate)
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
