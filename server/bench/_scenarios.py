"""The workloads `autoagent bench` can drive: named lists of goals (`--scenario NAME`).

Goals are worded for the offline model the simulator serves (clauses joined by "and"
run in parallel, "then" waits for what came before, a report consumes everything
before it), so each plans into several steps with parallel branches: fan-outs of price
lookups, pages fetched side by side, diamonds of fetch -> prices -> report. They need no
internet: prices and pages come from the bench's own loopback service (`_world.py`),
whose base URL replaces `{world}`; `{n}` is the request's number, for goals that write
a file of their own.

`requests(count, seed)` is the same list for the same arguments, so the baseline and
the optimized server get exactly the same requests in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from server.errors import UnknownScenario

DEFAULT_SCENARIO = "mixed"
DEFAULT_SEED = 20261127


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    templates: tuple[str, ...]

    def requests(self, count: int, seed: int, world_url: str) -> list[str]:
        """`count` goals: the templates in a seeded order, over and over."""
        order = list(range(len(self.templates)))
        random.Random(seed).shuffle(order)
        return [
            self.templates[order[n % len(order)]].format(world=world_url, n=n + 1)
            for n in range(count)
        ]


_PRICES = (
    "get the stock price of NVDA, AAPL, MSFT and AMZN then write a report",
    "get the stock price of NVDA and TSLA then write a report",
    "get the stock price of META, NFLX, IBM, ORCL and CRM then write a report",
    "get the stock price of GOOGL and what is 17 * 23 + 4 then write a report",
)
_MATH = (
    "what is 17 * 23 + 4 and what time is it in Tokyo then write a report",
    "calculate 365 * 24 and calculate 52 * 7 and calculate 1250 * 12 + 300 then write a report",
    "what time is it in London and what time is it in Seoul and what time is it in Sydney",
    "calculate 1250 * 12 + 300 then save the result to budget-{n}.txt",
)
_WEB = (
    "fetch {world}/news/chip-fabs and get the stock price of NVDA and AMD then write a report",
    "fetch {world}/news/solar and fetch {world}/news/wind and fetch {world}/news/hydro "
    "then write a report",
    "fetch {world}/news/electric-cars then get the stock price of TSLA, NIO and RIVN "
    "then write a report",
)

SCENARIOS: Mapping[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "mixed",
            "prices, web pages, arithmetic, time zones and reports: fans, fan-ins, diamonds",
            _PRICES + _MATH + _WEB,
        ),
        Scenario("math", "arithmetic, time zones and reports; no quote or web lookups", _MATH),
        Scenario("prices", "stock price fan-outs and reports", _PRICES),
    )
}


def scenario_named(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenario(name, SCENARIOS) from None
