"""`index_documents`: a documents indexing pass a client asked for over the WebSocket.

The pass is the documents agent's own (`DocumentsService.index`, the service the
server's runs use: one index, one embedder, one workspace), so a CLI that sends its
`documents index` here writes the same events a run's `documents.index` step would.

While it works the client gets `index_progress {id, files_done, files_total,
chunks_embedded}` frames: the indexer reports progress synchronously (per file), so
`ProgressRelay` keeps only the latest state and one task sends it, at most every
`PROGRESS_EVERY_S`; states a slow client cannot take are skipped, never queued. With
nothing new for `KEEPALIVE_S` (catching up with the log, loading the embedding model, a
long batch) the last state is sent again, so a client can bound its wait between
frames; `files_total` 0 means the files are not counted yet. Then one
`documents_indexed {id, report}` (the report `DocumentsService.index` returns), or one
`error` whose code says what was wrong with the request (`INDEX_ERROR_CODES`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from agents.errors import (
    CollectionModelConflict,
    NothingToIndex,
    PathNotAllowed,
    TooManyDocuments,
)
from agents.tools import DocumentsService, IndexProgress
from events import AutoagentError
from server.ws._protocol import error_frame, reply_frame

PROGRESS_EVERY_S = 0.1
KEEPALIVE_S = 5.0

# What a refused pass answers; any other refusal (a collection name that is not one,
# an embedding that failed) is `bad_request`.
INDEX_ERROR_CODES: tuple[tuple[type[AutoagentError], str], ...] = (
    (NothingToIndex, "not_found"),
    (PathNotAllowed, "forbidden"),
    (CollectionModelConflict, "conflict"),
    (TooManyDocuments, "too_large"),
)

Send = Callable[[str], Awaitable[None]]


def index_error_code(exc: AutoagentError) -> str:
    return next((code for kind, code in INDEX_ERROR_CODES if isinstance(exc, kind)), "bad_request")


class ProgressRelay:
    """The indexer's latest progress, sent as `index_progress` frames (see the module)."""

    def __init__(self, send: Send, request_id: Any) -> None:
        self._send = send
        self._request_id = request_id
        self._latest = IndexProgress(0, 0, 0)
        self._sent: IndexProgress | None = None
        self._changed = trio.Event()

    def update(self, progress: IndexProgress) -> None:
        """The indexer's callback (sync, never blocks)."""
        self._latest = progress
        self._changed.set()

    async def forward(self) -> None:
        """Send what changed, throttled, and the last state again when nothing did."""
        while True:
            with trio.move_on_after(KEEPALIVE_S):
                await self._changed.wait()
            self._changed = trio.Event()
            await self._send_latest()
            await trio.sleep(PROGRESS_EVERY_S)

    async def flush(self) -> None:
        """The last state, unless the client has it already."""
        if self._latest != self._sent and self._latest.files_total:
            await self._send_latest()
        else:
            await trio.lowlevel.checkpoint()

    async def _send_latest(self) -> None:
        latest = self._latest
        await self._send(
            reply_frame(
                "index_progress",
                self._request_id,
                files_done=latest.files_done,
                files_total=latest.files_total,
                chunks_embedded=latest.chunks_embedded,
            )
        )
        self._sent = latest  # only once delivered: a cancelled send leaves it to flush


async def index_for_client(
    service: DocumentsService, path: str, collection: str, send: Send, request_id: Any
) -> None:
    """One pass, its progress and its outcome sent with `send`.

    Refusals become one `error` frame; anything else is a bug and propagates (the
    connection's failure boundary closes it with 1011).
    """
    relay = ProgressRelay(send, request_id)
    refusal: str | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.forward)
        try:
            report = await service.index(path, collection, relay.update)
        except AutoagentError as exc:
            refusal = error_frame(index_error_code(exc), str(exc), request_id)
        nursery.cancel_scope.cancel()
    if refusal is not None:
        await send(refusal)
        return
    # In order on the one outgoing channel: the last progress, then the report.
    await relay.flush()
    await send(reply_frame("documents_indexed", request_id, report=report))
