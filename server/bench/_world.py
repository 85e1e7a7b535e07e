"""The outside world of `autoagent bench` and `autoagent sim`: quotes and web pages.

The benchmark's goals look up stock prices and read news pages, and there is no
internet to ask (nor should a benchmark, or a first try of the tools, depend on one).
This small HTTP service stands in for both, in the bench's own Trio loop, or behind
the simulator's port (`Simulator(fallback=World(...).respond)`):

- `GET /quotes?symbols=NVDA,AAPL` answers the quotes agent's protocol
  (`{"quotes": [{"symbol", "price", "currency"}]}`), prices fixed by the symbol;
- `GET /news/<topic>` answers a short HTML page about the topic, for `web.fetch`
  (the servers allow loopback through `agents.web_allow`);
- `GET /` a page linking a few of them.

Every answer waits like a real service would: 50-300 ms times the time scale, fixed by
a hash of the request target, so the baseline and the optimized server wait exactly
the same for the same request (time scale 0: at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import urllib.parse
from dataclasses import dataclass, field

import trio

from server.ws import RequestHead, answer_http, read_head

LATENCY_RANGE_S = (0.050, 0.300)
QUOTES_PATH = "/quotes"
NEWS_PREFIX = "/news/"
SAMPLE_TOPICS = ("chips", "energy", "shipping")


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by `text`."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def latency_s(target: str, time_scale: float) -> float:
    """How long the world takes to answer `target` (path and query), scaled."""
    low, high = LATENCY_RANGE_S
    return (low + (high - low) * _unit(target)) * time_scale


def price_of(symbol: str) -> float:
    """A stable made-up price between 10 and 1,000."""
    return round(10 + 990 * _unit("price:" + symbol), 2)


def _quotes(query: str) -> tuple[int, str, bytes]:
    symbols = urllib.parse.parse_qs(query).get("symbols", [""])[0].split(",")
    quotes = [{"symbol": s, "price": price_of(s), "currency": "USD"} for s in symbols if s.strip()]
    return 200, "application/json", json.dumps({"quotes": quotes}).encode()


def _news(topic: str) -> tuple[int, str, bytes]:
    words = topic.replace("-", " ").strip() or "nothing"
    body = (
        f"<html><head><title>News: {words}</title></head><body><h1>{words.title()}</h1>"
        f"<p>Analysts expect demand for {words} to grow this year, with supply still tight."
        f"</p><p>Prices for {words} moved within a narrow range last quarter.</p></body></html>"
    )
    return 200, "text/html; charset=utf-8", body.encode()


def _index() -> tuple[int, str, bytes]:
    links = "".join(f'<li><a href="{NEWS_PREFIX}{t}">News: {t}</a></li>' for t in SAMPLE_TOPICS)
    body = (
        "<html><head><title>autoagent world</title></head><body><h1>autoagent world</h1>"
        "<p>Made-up pages and prices for trying the web and quotes tools offline.</p>"
        f'<ul>{links}<li><a href="{QUOTES_PATH}?symbols=NVDA,AAPL">Quotes: NVDA, AAPL</a>'
        "</li></ul></body></html>"
    )
    return 200, "text/html; charset=utf-8", body.encode()


@dataclass
class World:
    """The stand-in service; `serve` puts it on a loopback port."""

    time_scale: float
    requests: int = 0
    by_route: dict[str, int] = field(default_factory=dict)

    async def answer(self, head: RequestHead) -> tuple[int, str, bytes]:
        return await self.respond(head.method, head.path)

    async def respond(self, method: str, target: str) -> tuple[int, str, bytes]:
        """Status, content type and body for `method target` (path and query)."""
        split = urllib.parse.urlsplit(target)
        route = "quotes" if split.path == QUOTES_PATH else "news"
        self.requests += 1
        self.by_route[route] = self.by_route.get(route, 0) + 1
        await trio.sleep(latency_s(target, self.time_scale))
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if split.path == QUOTES_PATH:
            return _quotes(split.query)
        if split.path.startswith(NEWS_PREFIX):
            return _news(urllib.parse.unquote(split.path[len(NEWS_PREFIX) :]))
        if split.path == "/":
            return _index()
        return 404, "text/plain", b"not found\n"

    async def _handle(self, stream: trio.SocketStream) -> None:
        # A client that hangs up early is its own business; the service goes on.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async with stream:
                head = await read_head(stream)
                if head is not None:
                    await answer_http(stream, head, self.answer)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 until cancelled; reports the bound port."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)
