"""The `memory` agent: remember, recall (semantic top-k), forget, forget_all.

Forgetting really forgets although the log is append-only (crypto-shredding, see
`projections.keystore`): `remember` embeds the text and appends a `MemoryAdded` whose
content and embedding are sealed with the user's key; `recall` embeds the query,
searches the live `memory` projection (after it has applied this agent's own writes)
and opens each hit's content from its log record; `forget` appends `MemoryForgotten`,
which removes the memory from the index (its sealed record stays in the log, openable
while the user's key lives); `forget_all` destroys the user's key, then appends
`MemoryKeyDestroyed`, after which nothing sealed with that key can be read by anyone.
The key goes first: if the append then fails, the memories are gone all the same and
the projection drops them on its next start (their key is missing).

A `remember` racing a `forget_all` of the same user may seal with the key being
destroyed; that memory is forgotten with the rest. A `remember` of text the user already
has, word for word, appends nothing and says it was already known (`already_known`);
two concurrent `remember`s of the same new text may both store it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import trio

from agents.embeddings import EmbeddingError
from agents.errors import InvalidParameters, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._context import AgentContext, MemoryAccess
from events import EventStore, MemoryForgotten, MemoryKeyDestroyed, RecordedEvent
from projections import (
    EmbeddingModelMismatch,
    KeyStore,
    MemoryHit,
    SealBroken,
    open_content,
    seal_memory,
)

DEFAULT_USER = "anonymous"
DEFAULT_K = 5
MAX_K = 50
MAX_CONTENT_CHARS = 20_000
MAX_USER_CHARS = 128
STREAM_PREFIX = "memory-"
# Nearest memories compared word for word with a new one before it is stored.
DUPLICATE_CANDIDATES = 3

_USER = {"type": "string", "description": "whose memory (default: anonymous)"}

REMEMBER = ToolSpec(
    agent="memory",
    acts_for="user",
    action="remember",
    description="Remember a piece of text for a user, to recall it later by meaning.",
    parameters={
        "type": "object",
        "properties": {
            "content": {"description": "what to remember: text, or an earlier step's result"},
            "text": {"type": "string", "description": "what to remember (when no content)"},
            "user": _USER,
        },
    },
    idempotent=False,
    batchable=True,
    keywords=("remember", "memorise", "memorize", "note", "memory"),
)
RECALL = ToolSpec(
    agent="memory",
    acts_for="user",
    action="recall",
    description="Recall the user's memories closest in meaning to a query (top k).",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "what to look for"},
            "k": {"type": "integer", "description": f"how many memories (1-{MAX_K}, default 5)"},
            "user": _USER,
        },
        "required": ["query"],
    },
    idempotent=True,
    keywords=("recall", "memories", "remembered", "memory", "retrieve"),
)
FORGET = ToolSpec(
    agent="memory",
    acts_for="user",
    action="forget",
    description="Forget one memory by its id: it is no longer recalled.",
    parameters={
        "type": "object",
        "properties": {"memory_id": {"type": "string"}, "user": _USER},
        "required": ["memory_id"],
    },
    idempotent=False,
    keywords=("forget", "memory"),
)
FORGET_ALL = ToolSpec(
    agent="memory",
    acts_for="user",
    action="forget_all",
    description=(
        "Forget every memory of a user for good: the user's key is destroyed, so no "
        "replay, export or rebuild can recover them."
    ),
    parameters={
        "type": "object",
        "properties": {"user": {"type": "string", "description": "whose memories"}},
        "required": ["user"],
    },
    idempotent=False,
    keywords=("forget", "everything"),
)


def _text(parameters: Mapping[str, Any], name: str, limit: int) -> str:
    value = parameters[name]
    if not value.strip():
        raise InvalidParameters(f"parameter {name!r} must not be empty")
    if len(value) > limit:
        raise InvalidParameters(f"parameter {name!r} is {len(value)} characters, over {limit}")
    return str(value)


def _as_text(value: Any) -> str:
    """Content as stored: text as is, an earlier step's structured result as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _user(parameters: Mapping[str, Any]) -> str:
    user = parameters.get("user", DEFAULT_USER)
    if not isinstance(user, str) or not user.strip() or "\x00" in user:
        raise InvalidParameters(f"parameter 'user' must be a non-empty name, got {user!r}")
    if len(user) > MAX_USER_CHARS:
        raise InvalidParameters(f"parameter 'user' is over {MAX_USER_CHARS} characters")
    return user


class MemoryService:
    """The agent's operations, shared by its tools; see the module docstring."""

    def __init__(self, access: MemoryAccess | None, store: EventStore | None) -> None:
        self._access = access
        self._store = store
        self._written = 0  # last position this agent appended (read-your-writes)

    def _caught_up_to(self, store: EventStore) -> int:
        """The position a read of the memory index waits for: everything the log held
        when it started, not only this agent's own writes (another run's or another
        process's `remember` a moment ago; the projections may wait up to
        `performance.projection_linger_ms` before applying a commit nobody waits for)."""
        return max(self._written, store.head_position)

    def _ready(self) -> tuple[MemoryAccess, EventStore]:
        if self._access is None or self._store is None:
            raise ToolError("memory is not available: the agent has no key store or event log")
        return self._access, self._store

    async def _embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        access, _ = self._ready()
        try:
            return await access.embedder.embed(texts)
        except EmbeddingError as exc:
            raise ToolError(f"embedding failed: {exc}", retryable=True) from exc

    async def remember(self, items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Seal and append (user, content) items: one embedding call, one append per user.

        An item the user already has, word for word, is not stored again: its result
        names the memory that holds it, with `already_known` true (see `_known`).
        """
        access, store = self._ready()
        vectors = await self._embed([content for _, content in items])
        results: list[dict[str, Any]] = [{} for _ in items]
        fresh: dict[str, list[int]] = {}  # user -> rows to store
        for i, (user, content) in enumerate(items):
            known = await self._known(user, content, vectors[i])
            earlier = next((j for j in fresh.get(user, []) if items[j][1] == content), None)
            if known is not None:
                results[i] = {"user": user, **known, "already_known": True}
            elif earlier is not None:
                results[i] = {"duplicate_of": earlier}  # filled in once `earlier` is stored
            else:
                fresh.setdefault(user, []).append(i)
        for user, rows in fresh.items():
            key = await trio.to_thread.run_sync(access.keys.current_or_create, user)
            ids = [uuid.uuid4().hex for _ in rows]
            events = [
                seal_memory(key, mid, items[i][1], vectors[i], access.embedder.model)
                for mid, i in zip(ids, rows, strict=True)
            ]
            appended = await store.append(STREAM_PREFIX + user, events)
            self._written = max(self._written, appended.last_position)
            for mid, i, position in zip(ids, rows, appended.positions, strict=True):
                results[i] = {"user": user, "memory_id": mid, "position": position}
        return [
            {**results[r["duplicate_of"]], "already_known": True} if "duplicate_of" in r else r
            for r in results
        ]

    async def _known(
        self, user: str, content: str, vector: np.ndarray[Any, np.dtype[np.float32]]
    ) -> dict[str, Any] | None:
        """The live memory of `user` whose content is exactly `content`, if there is one.

        Identical text embeds to the identical vector, so such a memory is among the
        nearest hits of the new one's vector (score 1.0); the few nearest are opened and
        compared word for word, because near-duplicates ("Dr. Lee" / "dr lee") may embed
        alike under some models yet are different memories. The content is sealed, so
        there is no cheaper exact lookup. Without the live index (`autoagent run` with
        no server), or when the user's memories were embedded by another model or their
        key is gone, nothing can be compared and the memory is stored.
        """
        access, store = self._ready()
        if access.index is None:
            return None
        if access.wait_for is not None:
            await access.wait_for(self._caught_up_to(store))
        try:
            hits = await trio.to_thread.run_sync(
                access.index.search, user, vector, DUPLICATE_CANDIDATES, access.embedder.model
            )
        except EmbeddingModelMismatch:
            return None
        records = await trio.to_thread.run_sync(_read_positions, store, [h.position for h in hits])
        for hit, record in zip(hits, records, strict=True):
            try:
                same = self._content(access.keys, hit, record) == content
            except ToolError:  # a seal that does not open holds nothing to compare
                same = False
            if same:
                return {"memory_id": hit.memory_id, "position": hit.position}
        return None

    async def recall(self, user: str, query: str, k: int) -> dict[str, Any]:
        access, store = self._ready()
        if access.index is None:
            raise ToolError("recall needs the server's memory index (run it under autoagent serve)")
        (vector,) = await self._embed([query])
        if access.wait_for is not None:
            await access.wait_for(self._caught_up_to(store))
        try:
            hits = await trio.to_thread.run_sync(
                access.index.search, user, vector, k, access.embedder.model
            )
        except EmbeddingModelMismatch as exc:
            raise ToolError(str(exc)) from exc
        records = await trio.to_thread.run_sync(_read_positions, store, [h.position for h in hits])
        memories = [
            {"memory_id": hit.memory_id, "content": content, "score": round(hit.score, 4)}
            for hit, record in zip(hits, records, strict=True)
            if (content := self._content(access.keys, hit, record)) is not None
        ]
        return {"user": user, "query": query, "memories": memories}

    @staticmethod
    def _content(keys: KeyStore, hit: MemoryHit, record: RecordedEvent | None) -> str | None:
        """The hit's content; None when shredded meanwhile (its key destroyed)."""
        if record is None or record.type != "MemoryAdded":
            return None
        if record.data.get("memory_id") != hit.memory_id:
            return None
        try:
            return open_content(keys, record.data)
        except SealBroken as exc:
            raise ToolError(f"memory {hit.memory_id} does not open: {exc}") from exc

    async def forget(self, user: str, memory_id: str) -> dict[str, Any]:
        access, store = self._ready()
        if access.index is not None:
            if access.wait_for is not None:
                await access.wait_for(self._caught_up_to(store))
            if access.index.position_of(user, memory_id) is None:
                raise ToolError(f"user {user!r} has no memory {memory_id!r}")
        appended = await store.append(STREAM_PREFIX + user, [MemoryForgotten(user, memory_id)])
        self._written = max(self._written, appended.last_position)
        return {"user": user, "memory_id": memory_id, "forgotten": True}

    async def forget_all(self, user: str) -> dict[str, Any]:
        access, store = self._ready()
        if access.wait_for is not None:
            await access.wait_for(self._caught_up_to(store))
        count = access.index.count(user) if access.index is not None else None
        key_id = await trio.to_thread.run_sync(access.keys.destroy, user)
        if key_id is None:
            return {"user": user, "key_destroyed": False, "forgotten": count or 0}
        appended = await store.append(STREAM_PREFIX + user, [MemoryKeyDestroyed(user, key_id)])
        self._written = max(self._written, appended.last_position)
        return {"user": user, "key_destroyed": True, "forgotten": count}


def _read_positions(store: EventStore, positions: list[int]) -> list[RecordedEvent | None]:
    """The records at `positions` (blocking: one worker-thread call for all hits)."""
    records: list[RecordedEvent | None] = []
    for position in positions:
        batch = store.log.read(position - 1, 1)
        records.append(batch[0] if batch and batch[0].position == position else None)
    return records


class RememberTool(Tool):
    spec = REMEMBER

    def __init__(self, service: MemoryService) -> None:
        self._service = service

    def _item(self, parameters: Mapping[str, Any]) -> tuple[str, str]:
        require_valid(self.spec, parameters)
        if parameters.get("content") is None and parameters.get("text") is None:
            raise InvalidParameters("memory.remember: give 'content' (or 'text')")
        if parameters.get("content") is None:
            return _user(parameters), _text(parameters, "text", MAX_CONTENT_CHARS)
        content = _as_text(parameters["content"])
        return _user(parameters), _text({"content": content}, "content", MAX_CONTENT_CHARS)

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        (result,) = await self._service.remember([self._item(parameters)])
        return result

    async def call_batch(self, batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        """All texts embedded in one call; a refused item fails only its own step."""
        items: list[tuple[str, str] | ToolError] = []
        for parameters in batch:
            try:
                items.append(self._item(parameters))
            except ToolError as exc:
                items.append(exc)
        valid = [item for item in items if not isinstance(item, ToolError)]
        results = iter(await self._service.remember(valid) if valid else [])
        return [item if isinstance(item, ToolError) else next(results) for item in items]


class RecallTool(Tool):
    spec = RECALL

    def __init__(self, service: MemoryService) -> None:
        self._service = service

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        k = parameters.get("k", DEFAULT_K)
        if not 1 <= k <= MAX_K:
            raise InvalidParameters(f"parameter 'k' must be between 1 and {MAX_K}, got {k}")
        query = _text(parameters, "query", MAX_CONTENT_CHARS)
        return await self._service.recall(_user(parameters), query, k)


class ForgetTool(Tool):
    spec = FORGET

    def __init__(self, service: MemoryService) -> None:
        self._service = service

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        memory_id = _text(parameters, "memory_id", MAX_USER_CHARS)
        return await self._service.forget(_user(parameters), memory_id)


class ForgetAllTool(Tool):
    spec = FORGET_ALL

    def __init__(self, service: MemoryService) -> None:
        self._service = service

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        return await self._service.forget_all(_user(parameters))


class MemoryAgent(Agent):
    name = "memory"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (REMEMBER, RECALL, FORGET, FORGET_ALL)

    def __init__(self, context: AgentContext) -> None:
        access = context.memory
        service = MemoryService(access, context.store)
        self._tools: dict[str, Tool] = {
            "remember": RememberTool(service),
            "recall": RecallTool(service),
            "forget": ForgetTool(service),
            "forget_all": ForgetAllTool(service),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
