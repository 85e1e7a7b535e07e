"""The `clock` agent: `now` gives the current time in any IANA time zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Any

from ..catalog import ToolSpec
from ..errors import InvalidParameters
from .base import Agent, Tool, require_valid

NOW = ToolSpec(
    agent="clock",
    action="now",
    description="The current date and time in a time zone (IANA name like Asia/Tokyo).",
    parameters={
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "IANA zone, default UTC"}},
        "required": [],
    },
    idempotent=True,
    keywords=("time", "date", "clock", "now", "today", "timezone"),
)


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidParameters(
            f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
        ) from None


def describe(moment: dt.datetime) -> dict[str, Any]:
    return {
        "timezone": str(moment.tzinfo),
        "iso": moment.isoformat(timespec="seconds"),
        "date": moment.date().isoformat(),
        "time": moment.strftime("%H:%M:%S"),
        "weekday": moment.strftime("%A"),
        "utc_offset": moment.strftime("%z"),
    }


class NowTool(Tool):
    spec = NOW

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        tz = zone(parameters.get("timezone") or "UTC")
        return describe(dt.datetime.now(tz))


class ClockAgent(Agent):
    name = "clock"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (NOW,)

    def __init__(self, context: object = None) -> None:
        self._tools = {"now": NowTool()}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
