"""Reading a streamed chat completion: server-sent events, a network read at a time.

A model streams a token or a few per event, so a plan of 300 tokens is 300 events. Read
line by line through the HTTP client's text and line iterators, each event cost an
async generator step in every layer above it, and each delta went up through the
provider's and the planner's generators on its own: per event, not per read. Here the
bytes of one network read are split into lines and parsed together, and the deltas of
that read are handed up as one piece of text (a read holds as many events as arrived
since the last one: one when the model is slow, dozens when it is fast).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.errors import InvalidModelOutput, ProviderError
from agents.llm._provider import Usage

DONE = "[DONE]"


@dataclass(slots=True)
class ReadDelta:
    """What one network read carried: its text (all deltas joined) and the last usage."""

    text: str
    usage: Usage | None
    done: bool


class SseReader:
    """Bytes in, parsed events out; a line cut between two reads waits for its end.

    Lines end with LF, CRLF or CR (the SSE grammar); a CR at the end of one read and an
    LF at the start of the next make an empty line between them, which means nothing
    here (only `data:` lines are read, one JSON event each, as OpenAI-compatible
    servers send them).
    """

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> ReadDelta:
        buffer = self._tail + data
        cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
        if cut < 0:
            self._tail = buffer
            return ReadDelta("", None, False)
        self._tail = buffer[cut + 1 :]
        return self._parse(buffer[: cut + 1])

    def end(self) -> ReadDelta:
        """The last line, when the body ended without a line break after it."""
        rest, self._tail = self._tail, b""
        return self._parse(rest)

    @staticmethod
    def _parse(block: bytes) -> ReadDelta:
        try:
            text = block.decode()
        except UnicodeDecodeError as exc:
            raise InvalidModelOutput(f"a stream event is not UTF-8: {exc}") from exc
        parts: list[str] = []
        usage: Usage | None = None
        done = False
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            event = sse_event(line)
            if event == DONE:
                done = True
            elif isinstance(event, dict):
                delta, found = chunk_delta(event)
                if delta:
                    parts.append(delta)
                usage = found or usage
        return ReadDelta("".join(parts), usage, done)


# Token counts above this are no count a model reports.
MAX_TOKENS = 2**53


def sse_event(line: str) -> object:
    """The payload of one SSE `data:` line: a dict, "[DONE]", or None for anything else."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == DONE:
        return data
    return json_of(data, "a stream event")


def json_of(text: str | bytes, what: str) -> Any:
    """Parsed JSON, or `InvalidModelOutput` naming `what` (nesting too deep included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        shown = text[:80] if isinstance(text, str) else text[:80].decode(errors="replace")
        raise InvalidModelOutput(f"{what} is not JSON: {shown!r}") from exc


def chunk_delta(event: Mapping[str, Any]) -> tuple[str | None, Usage | None]:
    """The text delta and the usage of one `chat.completion.chunk` event."""
    if isinstance(event.get("error"), Mapping):
        raise ProviderError(502, f"the endpoint reported an error: {event['error'].get('message')}")
    choices = event.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise InvalidModelOutput("a stream event's choices are not a list")
    first = choices[0] if choices else None
    delta = first.get("delta") if isinstance(first, Mapping) else None
    content = delta.get("content") if isinstance(delta, Mapping) else None
    return (content if isinstance(content, str) else None), usage_of_dict(event.get("usage"))


def usage_of_dict(usage: object) -> Usage | None:
    """The token counts of a `usage` object; None when there is none."""
    if not isinstance(usage, Mapping):
        return None
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def _count(value: object) -> int:
    """A reported token count: a whole number from 0 to `MAX_TOKENS` (missing: 0)."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        shown = reprlib.repr(value)
        raise InvalidModelOutput(f"the response's usage is not a count of tokens: {shown}")
    return value
