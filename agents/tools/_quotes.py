"""The `quotes` agent: stock prices from a configurable HTTP quote endpoint.

Protocol of the endpoint (`agents.quote_endpoint`):
  GET <endpoint>?symbols=NVDA,AAPL  ->  {"quotes": [{"symbol": "NVDA", "price": 123.4,
                                          "currency": "USD", ...}, ...]}
`get_stock_price` asks for one symbol; `get_stock_prices` is its batch form, which the
executor uses to merge independent single-symbol steps into one request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from agents.errors import InvalidParameters, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._context import AgentContext

SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
MAX_SYMBOLS = 50

GET_PRICE = ToolSpec(
    agent="quotes",
    action="get_stock_price",
    description="Get the latest stock price for one ticker symbol (e.g. NVDA).",
    parameters={
        "type": "object",
        "properties": {"symbol": {"type": "string", "description": "ticker symbol"}},
        "required": ["symbol"],
    },
    idempotent=True,
    batchable=True,
    batch_action="get_stock_prices",
    keywords=("stock", "price", "quote", "ticker", "share", "shares"),
)
GET_PRICES = ToolSpec(
    agent="quotes",
    action="get_stock_prices",
    description="Get the latest stock prices for several ticker symbols at once.",
    parameters={
        "type": "object",
        "properties": {"symbols": {"type": "array", "items": {"type": "string"}}},
        "required": ["symbols"],
    },
    idempotent=True,
    keywords=("stocks", "prices", "quotes", "tickers"),
)


def _symbol(value: Any) -> str:
    symbol = str(value).strip().upper()
    if not SYMBOL.match(symbol):
        raise InvalidParameters(f"not a ticker symbol: {value!r}")
    return symbol


class QuoteClient:
    """Fetches quotes over the shared HTTP client; one request for many symbols."""

    def __init__(self, endpoint: str, http: httpx.AsyncClient | None) -> None:
        self.endpoint = endpoint
        self._http = http

    async def fetch(self, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not self.endpoint:
            raise ToolError("no quote endpoint configured (set agents.quote_endpoint)")
        if self._http is None:
            raise ToolError("the quotes agent has no HTTP client")
        try:
            response = await self._http.get(self.endpoint, params={"symbols": ",".join(symbols)})
        except httpx.HTTPError as exc:
            raise ToolError(f"quote endpoint unreachable: {exc!r}", retryable=True) from exc
        if response.status_code != 200:
            retryable = response.status_code >= 500 or response.status_code == 429
            raise ToolError(f"quote endpoint answered {response.status_code}", retryable=retryable)
        return _quotes_by_symbol(response)


def _quotes_by_symbol(response: httpx.Response) -> dict[str, dict[str, Any]]:
    try:
        quotes = response.json()["quotes"]
        return {str(q["symbol"]).upper(): dict(q) for q in quotes}
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"quote endpoint sent an unexpected body: {exc!r}") from exc


def _pick(quotes: Mapping[str, dict[str, Any]], symbol: str) -> dict[str, Any]:
    quote = quotes.get(symbol)
    if quote is None:
        raise ToolError(f"no quote for {symbol}")
    return quote


class GetPriceTool(Tool):
    spec = GET_PRICE

    def __init__(self, client: QuoteClient) -> None:
        self._client = client

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        symbol = _symbol(parameters["symbol"])
        return _pick(await self._client.fetch([symbol]), symbol)

    async def call_batch(self, batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One request for every symbol; a missing symbol fails only its own step."""
        for parameters in batch:
            require_valid(self.spec, parameters)
        symbols = [_symbol(p["symbol"]) for p in batch]
        quotes = await self._client.fetch(sorted(set(symbols)))
        return [quotes.get(s) or ToolError(f"no quote for {s}") for s in symbols]


class GetPricesTool(Tool):
    spec = GET_PRICES

    def __init__(self, client: QuoteClient) -> None:
        self._client = client

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        symbols = [_symbol(s) for s in parameters["symbols"]]
        if not 1 <= len(symbols) <= MAX_SYMBOLS:
            raise InvalidParameters(f"give 1 to {MAX_SYMBOLS} symbols")
        quotes = await self._client.fetch(symbols)
        return {"quotes": [_pick(quotes, s) for s in symbols]}


class QuotesAgent(Agent):
    name = "quotes"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (GET_PRICE, GET_PRICES)

    def __init__(self, context: AgentContext) -> None:
        client = QuoteClient(context.settings.quote_endpoint, context.http)
        self._tools: dict[str, Tool] = {
            "get_stock_price": GetPriceTool(client),
            "get_stock_prices": GetPricesTool(client),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
