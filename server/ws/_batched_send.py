"""Several WebSocket messages in one socket write, as trio-websocket would send each.

trio-websocket writes one message per `send_message`: a system call each, and on this
machine a loopback send cost ~100 us of CPU (it runs the receiving side's TCP work
too). A run's follower hands over the frames of one commit at once (several events), so
`send_messages` encodes them in order with the connection's own wsproto state machine
and writes the bytes under the connection's own stream lock, exactly as its `_send`
does for one message (a broken socket becomes `ConnectionClosed`). Writes of other
tasks (the reader's pongs, a close) stay whole and in order: they take the same lock.

It reaches into trio-websocket's private attributes (`_close_reason`, `_wsproto`,
`_stream_lock`, `_stream`, `_abort_web_socket`); the server tests that count frames
against socket writes fail if those change.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import TextMessage


async def send_messages(ws: WebSocketConnection, messages: Sequence[str]) -> None:
    """Send `messages` as text messages, in order, in one write of the socket."""
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    # Encoded before the lock is asked for, with no checkpoint in between, as
    # trio-websocket's `_send` does: the lock's FIFO order is the encoding order.
    data = b"".join(ws._wsproto.send(TextMessage(data=message)) for message in messages)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            assert ws._close_reason is not None
            raise ConnectionClosed(ws._close_reason) from None
