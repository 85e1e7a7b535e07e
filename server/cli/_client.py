"""A small WebSocket client of a running `autoagent serve`, for the commands that write.

`run`, `runs resume|retry|cancel`, `approve`, `forget` and `documents index` go
through the server that holds the data dir (the URL it recorded there,
`server._datadir`) or the one `--server ws://...` names, so the run (or the indexing)
executes in the server and every client sees it live. `server_url` picks that server
(None: work in this process); `open_server_client` connects and says hello with the
token (`--token`, else AUTOAGENT_TOKEN) when there is one.

`ServerClient.request` sends one request under a fresh id and waits for the reply with
that id; event frames that arrive meanwhile are kept for `follow_run`, which yields a
run's event frames until its terminal event. Whatever goes wrong - nothing listening,
a refused handshake, a wrong token, an `error` frame, the server gone mid-run - becomes
one `InputError` line; a run may wait for a human for as long as it takes, so only
connecting and replies are bounded in time. `request_with_progress` serves requests the
server reports on as it works (`index_documents`): its bound is on the silence between
frames, not on the whole.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from events import TERMINAL_RUN_TYPES
from server._datadir import running_server
from server.app import TOKEN_ENV
from server.config import Config
from server.errors import InputError

# Bound on connecting, and on each reply to a request (not on following a run).
SERVER_WAIT_S = 30.0
CLIENT_NAME = "autoagent-cli"


def add_server_flags(parser: argparse.ArgumentParser, *, local: bool = False) -> None:
    """`--server` and `--token`, for a command that can go through a running server;
    with `local`, also `--in-process` (a command that can run here instead)."""
    parser.add_argument(
        "--server",
        metavar="URL",
        help="the running server to send this to, e.g. ws://127.0.0.1:8765/ "
        "(default: the one holding the data dir, if any)",
    )
    parser.add_argument("--token", help=f"token for a server with auth on (default: ${TOKEN_ENV})")
    if not local:
        return
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run it in this process even when a server holds the data dir (the log is "
        "shared: the server's subscribers see its events)",
    )


def server_url(config: Config, args: argparse.Namespace) -> str | None:
    """The server this command goes through: `--server`, else the one holding the data
    dir; None when neither (the command then works in this process)."""
    given = getattr(args, "server", None)
    if given:
        return _checked_url(given)
    if getattr(args, "in_process", False):
        return None
    record = running_server(config.store.data_path)
    if record is None:
        return None
    if record.url is None:
        raise InputError(
            f"the server holding data dir {config.store.data_path} (pid {record.pid}) is "
            "still starting; try again in a moment"
        )
    return record.url


def require_server(config: Config, args: argparse.Namespace, what: str) -> str:
    """The server for a command that only a server can serve, or one line saying so."""
    url = server_url(config, args)
    if url is None:
        raise InputError(
            f"{what} needs a running server: none holds data dir {config.store.data_path}; "
            "start one with `autoagent serve` or name one with --server ws://HOST:PORT/"
        )
    return url


def token_of(args: argparse.Namespace) -> str:
    return str(getattr(args, "token", None) or os.environ.get(TOKEN_ENV, ""))


def _checked_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InputError(f"--server {url!r} is not a WebSocket URL (ws://HOST:PORT/)")
    return url


class ServerClient:
    """One connection to a running server: requests by id, and the events of runs."""

    def __init__(self, ws: WebSocketConnection, url: str) -> None:
        self.url = url
        self._ws = ws
        self._events: deque[dict[str, Any]] = deque()
        self._requests = 0

    async def request(self, kind: str, reply: str, **fields: Any) -> dict[str, Any]:
        """Send a `kind` request; its `reply` frame, or `InputError` for an `error`."""
        self._requests += 1
        request_id = f"cli-{self._requests}"
        await self._send({"type": kind, "id": request_id, **fields})
        with trio.move_on_after(SERVER_WAIT_S) as waited:
            while True:
                frame = await self._receive()
                if frame.get("type") == "event":
                    self._events.append(frame)
                elif frame.get("type") == "error" and frame.get("id") in (request_id, None):
                    raise self._refusal(frame)
                elif frame.get("id") == request_id and frame.get("type") == reply:
                    return frame
        assert waited.cancelled_caught
        raise InputError(f"the server at {self.url} did not answer {kind} in {SERVER_WAIT_S:g} s")

    async def request_with_progress(
        self,
        kind: str,
        reply: str,
        progress: str,
        on_progress: Callable[[dict[str, Any]], None],
        **fields: Any,
    ) -> dict[str, Any]:
        """Like `request`, for work that takes as long as it takes: each `progress` frame
        of this request goes to `on_progress` until the `reply` frame arrives. The server
        sends progress at least every few seconds, so only the silence between frames is
        bounded (by `SERVER_WAIT_S`)."""
        self._requests += 1
        request_id = f"cli-{self._requests}"
        await self._send({"type": kind, "id": request_id, **fields})
        while True:
            frame = await self._receive_within(kind)
            if frame.get("type") == "event":
                self._events.append(frame)
            elif frame.get("type") == "error" and frame.get("id") in (request_id, None):
                raise self._refusal(frame)
            elif frame.get("id") == request_id and frame.get("type") == progress:
                on_progress(frame)
            elif frame.get("id") == request_id and frame.get("type") == reply:
                return frame

    async def _receive_within(self, kind: str) -> dict[str, Any]:
        with trio.move_on_after(SERVER_WAIT_S):
            return await self._receive()
        raise InputError(
            f"the server at {self.url} sent nothing about {kind} for {SERVER_WAIT_S:g} s"
        )

    async def follow_run(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """The event frames of `run_id` that arrive on this connection, up to and with
        its terminal event (the server sends them after `accepted`, `resumed`, `retried`)."""
        stream = f"run-{run_id}"
        while True:
            frame = self._events.popleft() if self._events else await self._receive()
            if frame.get("type") == "error":
                raise self._refusal(frame)
            if frame.get("type") != "event" or frame.get("stream") != stream:
                continue
            yield frame
            if frame.get("event_type") in TERMINAL_RUN_TYPES:
                return

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self._ws.send_message(json.dumps(frame))
        except ConnectionClosed as closed:
            raise self._gone(closed) from None

    async def _receive(self) -> dict[str, Any]:
        try:
            text = await self._ws.get_message()
        except ConnectionClosed as closed:
            raise self._gone(closed) from None
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            raise InputError(f"the server at {self.url} sent a frame that is not a JSON object")
        return frame

    def _refusal(self, frame: dict[str, Any]) -> InputError:
        code, message = frame.get("code"), frame.get("message")
        if code == "unauthorized":
            return InputError(
                f"the server at {self.url} refused: {message} (unauthorized); "
                f"give its token with --token or ${TOKEN_ENV}"
            )
        return InputError(f"the server refused: {message} ({code})")

    def _gone(self, closed: ConnectionClosed) -> InputError:
        reason = closed.reason
        if reason is None:
            why = "no close code"
        else:
            why = f"{reason.code} {reason.reason}" if reason.reason else str(reason.code)
        return InputError(f"the server at {self.url} closed the connection ({why})")


@asynccontextmanager
async def open_server_client(url: str, token: str = "") -> AsyncIterator[ServerClient]:
    """A connection to the server at `url`, said hello with `token` when there is one."""
    ws: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            url, connect_timeout=SERVER_WAIT_S, disconnect_timeout=2.0
        ) as ws:
            client = ServerClient(ws, url)
            if token:
                await client.request("hello", "welcome", token=token, client=CLIENT_NAME)
            yield client
    except ConnectionRejected as exc:
        raise InputError(
            f"the server at {url} refused the connection (HTTP {exc.status_code})"
        ) from None
    except HandshakeError as exc:
        cause = exc.__cause__ or exc
        raise InputError(f"cannot reach a server at {url}: {_plain(cause)}") from None
    finally:
        if ws is not None:
            # trio-websocket leaves the socket to the garbage collector when the server
            # closed first; close it here, whoever closed first.
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


def _plain(exc: BaseException) -> str:
    """An exception as a short phrase ("Connection refused", "timed out")."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text or type(exc).__name__
