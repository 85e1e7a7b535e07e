"""`send_messages`: several WebSocket messages in one socket write, over a real
connection on 127.0.0.1 (trio-websocket on both ends)."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from server.ws._batched_send import send_messages

TIMEOUT_S = 10


async def test_messages_arrive_whole_and_in_order_and_a_closed_connection_refuses_more() -> None:
    served: list[WebSocketConnection] = []
    connected = trio.Event()
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        served.append(ws)
        connected.set()
        await done.wait()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            port = server.port
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as client:
                await connected.wait()
                ws = served[0]
                messages = ["one", "two é", "x" * 70_000, "four"]
                pinged = trio.Event()

                async def ping_meanwhile() -> None:
                    # Another task writing the same socket (a ping and its pong).
                    await client.ping(b"p")
                    pinged.set()

                nursery.start_soon(ping_meanwhile)
                await send_messages(ws, messages)
                assert [await client.get_message() for _ in messages] == messages
                await pinged.wait()
                await ws.send_message("after")  # the connection is still in order
                assert await client.get_message() == "after"
                await client.aclose()
                with pytest.raises(ConnectionClosed):
                    for _ in range(100):  # until the server side has seen the close
                        await send_messages(ws, ["late", "later"])
                        await trio.sleep(0.01)
            done.set()
            nursery.cancel_scope.cancel()
