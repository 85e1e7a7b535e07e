"""Arbitrary WebSocket frames, built from the protocol's own schema (`REQUESTS`).

Two generators of the same shapes: hypothesis strategies for the property tests
(`frame_texts`, `frame_lists`), and `RandomFrames`, a seeded `random.Random` version for
the long fuzz run (`tests/performance/fuzz_ws.py`), where hypothesis' shrinking and
example database would only cost time.

A frame is, in about these proportions: a JSON object of one of the protocol's message
types, each declared field left out, given a plausible value (valid or just out of
range) or any JSON value at all, plus unknown fields, and sometimes a `type` that is
any JSON value; or text that is not a frame at all (not JSON, another JSON value,
nesting past the parser's depth, NaN, integers past the digit limit, lone surrogates).
`expected_id` says which id a reply must echo.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

from server.ws._protocol import (
    REQUESTS,
    Field,
    Integer,
    Kind,
    MessageType,
    OneOf,
    RequestId,
    StreamName,
    Text,
)

MAX_SAFE_INTEGER = 2**53 - 1
ABSENT = object()
GOALS = ("what is 17 * 23 + 4", "what is 2 + 2", "what time is it")
# Texts that are not frames, each aimed at a way a parser can break.
SPECIAL_TEXTS = (
    "",
    " ",
    "{",
    "null",
    "[]",
    "42",
    '"ping"',
    "[" * 100_000,
    '{"a":' * 50_000,
    '{"type": "ping", "id": NaN}',
    '{"type": "ping", "id": Infinity}',
    '{"type": "ping", "id": ' + "9" * 5000 + "}",
    '{"type": "ping", "id": "\\ud800"}',
    '{"type": "message", "id": 1, "text": "\\udfff", "session_id": "\\ud800"}',
    '{"type": "ping", "id": "x", "session_id": true}',
    '{"type": "ping", "id": 1, "type": "explode"}',
    '{"type": "subscribe", "id": 1, "stream": "$all", "after": 1e400}',
    '{"type": "subscribe", "id": 1, "stream": "$all", "after": -0}',
)


def wire_text(text: str) -> str:
    """`text` as a WebSocket text frame can carry it (UTF-8: no lone surrogates)."""
    return text.encode("utf-8", "replace").decode("utf-8")


# --- hypothesis --------------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)


def plausible(kind: Kind) -> st.SearchStrategy[Any]:
    """Values near what `kind` accepts: valid ones, and ones just outside it."""
    if isinstance(kind, RequestId):
        return st.integers(-MAX_SAFE_INTEGER - 2, MAX_SAFE_INTEGER + 2) | st.text(max_size=130)
    if isinstance(kind, Integer):
        return st.integers(kind.minimum - 2, kind.maximum + 2)
    if isinstance(kind, OneOf):
        return st.sampled_from(kind.choices) | st.text(max_size=8)
    if isinstance(kind, StreamName):
        ids = st.text(max_size=130)
        return (
            st.sampled_from(["$all", "run-x", "session-y"])
            | ids.map(lambda i: f"run-{i}")
            | ids.map(lambda i: f"session-{i}")
        )
    if isinstance(kind, Text) and kind.max_chars is None:
        return st.sampled_from(GOALS) | any_text
    assert isinstance(kind, Text)
    limit = kind.max_chars or 0
    return st.text(max_size=limit + 2) | st.sampled_from(["s1", "x" * (limit + 1)])


def _field(spec: Field) -> st.SearchStrategy[Any]:
    return st.just(ABSENT) | plausible(spec.kind) | plausible(spec.kind) | json_values


def _frame_of(message: MessageType) -> st.SearchStrategy[dict[str, Any]]:
    kind = st.just(message.name) | st.just(message.name) | st.just(message.name) | json_values
    fields = st.fixed_dictionaries({spec.name: _field(spec) for spec in message.fields})
    extras = st.dictionaries(any_text, json_values, max_size=2)
    return st.tuples(kind, fields, extras).map(_assemble)


def _assemble(parts: tuple[Any, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    kind, fields, extras = parts
    frame = {k: v for k, v in extras.items() if k not in fields and k != "type"}
    frame["type"] = kind
    frame |= {k: v for k, v in fields.items() if v is not ABSENT}
    return frame


frame_objects = st.sampled_from(list(REQUESTS.values())).flatmap(_frame_of)
frame_texts = (
    frame_objects.map(json.dumps)
    | frame_objects.map(json.dumps)
    | frame_objects.map(json.dumps)
    | st.sampled_from(SPECIAL_TEXTS)
    | json_values.map(json.dumps)
    | any_text.map(wire_text)
)


# --- expectations ------------------------------------------------------------------------------


def loaded(text: str) -> Any:
    """The frame as the test reads it (None when it is not a JSON object, NaN being no
    JSON)."""
    try:
        frame = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return frame if isinstance(frame, dict) else None


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def expected_id(text: str) -> str | int | None:
    """The id a reply must echo: a valid request id of a JSON object frame, else None."""
    frame = loaded(text)
    if frame is None:
        return None
    value = frame.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    if isinstance(value, str) and len(value) <= 128:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return value
    return None


# --- seeded, for the long fuzz run ---------------------------------------------------------------


class RandomFrames:
    """The same shapes as `frame_texts`, from a seeded `random.Random` (no hypothesis).

    `remember(reply)` feeds back the runs and sessions the server accepted, so later
    cancel, resume, approve, subscribe and message frames name real ones too.
    """

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self._messages = list(REQUESTS.values())
        self.known: dict[str, list[str]] = {"run_id": ["r1"], "session_id": ["s1"]}

    def remember(self, reply: dict[str, Any]) -> None:
        for name in ("run_id", "session_id"):
            value = reply.get(name)
            if reply.get("type") == "accepted" and isinstance(value, str):
                self.known[name] = [*self.known[name][-50:], value]

    def text(self) -> str:
        roll = self.random.random()
        if roll < 0.75:
            return json.dumps(self.frame())
        if roll < 0.85:
            return self.random.choice(SPECIAL_TEXTS)
        if roll < 0.95:
            return json.dumps(self.value(3))
        return wire_text(self._string(20))

    def frame(self) -> dict[str, Any]:
        message = self.random.choice(self._messages)
        frame: dict[str, Any] = {}
        for _ in range(self.random.choice((0, 0, 0, 1, 2))):
            frame[self._string(8)] = self.value(2)
        frame["type"] = message.name if self.random.random() < 0.9 else self.value(1)
        for spec in message.fields:
            roll = self.random.random()
            if roll < 0.1:
                continue
            frame[spec.name] = self.plausible(spec) if roll < 0.9 else self.value(2)
        return frame

    def plausible(self, spec: Field) -> Any:
        r, kind = self.random, spec.kind
        if spec.name in self.known and r.random() < 0.7:
            return r.choice(self.known[spec.name])
        if isinstance(kind, StreamName) and r.random() < 0.5:
            return r.choice(("run-", "session-")) + r.choice(self.known["session_id"])
        if isinstance(kind, RequestId):
            return r.choice((r.randint(-5, 10**6), self._string(12), MAX_SAFE_INTEGER + 1))
        if isinstance(kind, Integer):
            return r.choice((r.randint(0, 50), kind.minimum - 1, kind.maximum + 1))
        if isinstance(kind, OneOf):
            return r.choice((*kind.choices, self._string(5)))
        if isinstance(kind, StreamName):
            return r.choice(("$all", "run-x", "session-y", f"run-{self._string(6)}", "users"))
        if isinstance(kind, Text) and kind.max_chars is None:
            return r.choice((*GOALS, self._string(30)))
        return r.choice(("s1", self._string(10), "x" * 129))

    def value(self, depth: int) -> Any:
        r = self.random
        roll = r.random()
        if depth <= 0 or roll < 0.6:
            big = r.randint(-(2**70), 2**70)
            return r.choice((None, True, False, big, r.uniform(-1e9, 1e9), self._string(10)))
        if roll < 0.8:
            return [self.value(depth - 1) for _ in range(r.randint(0, 3))]
        return {self._string(6): self.value(depth - 1) for _ in range(r.randint(0, 3))}

    def _string(self, size: int) -> str:
        r = self.random
        alphabet = "abc xyz-_$\x00\n\u00e9\u4e2d\U0001f600\ud800\udfff"
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, size)))
