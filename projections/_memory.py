"""The `memory` projection: one FAISS index per user over their sealed memories.

Events (stream `memory-<user>`): `MemoryAdded` opens the sealed embedding with the
user's key and adds it under the record's log position (the FAISS id), so a recall
can read the sealed content back from the log; `MemoryForgotten` removes one memory;
`MemoryKeyDestroyed` drops the user's index (the key is gone, nothing is recoverable).
A `MemoryAdded` whose key no longer exists is skipped: it is shredded. The projection
never sees content, only embeddings; it reads keys and never writes them.

A user's memories are all sealed with the user's one live key (a new key only comes
after the old one was destroyed, so a memory under a new key resets the index), and
embedded by one model: a memory from another model (or of another length) is skipped
and counted, since its vector cannot be compared with the others.

Snapshots: each user's index (`VectorIndex.dump`, FAISS bytes) with the memory id map
is sealed with that user's key, so a snapshot left in a freed LMDB page is shredded
with the key too. Restoring skips users whose key is gone. `comparable_state` opens
the sections and reduces each index to its canonical contents for `replay --verify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from events import KeyStore, MemoryAdded, RecordedEvent, UserKey
from projections._base import SnapshottingProjection
from projections._state_store import pack, unpack
from projections._vector_index import IndexOptions, Trainer, VectorIndex
from projections.errors import EmbeddingModelMismatch, SealBroken

CONTENT = b"content"
EMBEDDING = b"embedding"
SNAPSHOT = b"snapshot"


def seal_context(part: bytes, user: str, memory_id: str = "") -> bytes:
    """The AAD binding a sealed value to its part, user and memory (no swapping)."""
    return b"autoagent/memory/" + part + b"\x00" + user.encode() + b"\x00" + memory_id.encode()


def seal_memory(
    key: UserKey, memory_id: str, content: str, vector: NDArray[np.float32], model: str
) -> MemoryAdded:
    """A `MemoryAdded` whose content and embedding are sealed with `key`."""
    embedding = np.ascontiguousarray(vector, dtype="<f4").reshape(-1).tobytes()
    return MemoryAdded(
        user=key.user,
        memory_id=memory_id,
        content="",
        embedding=b"",
        model=model,
        key_id=key.key_id,
        sealed_content=key.seal(content.encode(), seal_context(CONTENT, key.user, memory_id)),
        sealed_embedding=key.seal(embedding, seal_context(EMBEDDING, key.user, memory_id)),
    )


def open_content(keys: KeyStore, data: dict[str, Any]) -> str | None:
    """The content of a `MemoryAdded` payload, or None when its key is destroyed."""
    if not data.get("key_id"):
        return str(data["content"])
    key = keys.key(data["user"], data["key_id"])
    if key is None:
        return None
    context = seal_context(CONTENT, data["user"], data["memory_id"])
    return key.open(data["sealed_content"], context).decode()


def open_embedding(keys: KeyStore, data: dict[str, Any]) -> bytes | None:
    """The float32 embedding bytes of a `MemoryAdded` payload (None: key destroyed)."""
    if not data.get("key_id"):
        return bytes(data["embedding"])
    key = keys.key(data["user"], data["key_id"])
    if key is None:
        return None
    context = seal_context(EMBEDDING, data["user"], data["memory_id"])
    return key.open(data["sealed_embedding"], context)


@dataclass(frozen=True, slots=True)
class MemoryHit:
    memory_id: str
    position: int  # of the `MemoryAdded` record in the log
    score: float  # cosine similarity


@dataclass(frozen=True, slots=True)
class MemoryStatistics:
    users: int
    memories: int
    ivf_users: int
    training: int
    trainings: int
    skipped: int  # MemoryAdded events not indexed: shredded, broken or mismatched


class _UserMemories:
    """One user's index and the memory id <-> position maps."""

    __slots__ = ("by_id", "by_position", "index", "key_id", "model")

    def __init__(self, key_id: str, model: str, index: VectorIndex) -> None:
        self.key_id = key_id
        self.model = model
        self.index = index
        self.by_id: dict[str, int] = {}
        self.by_position: dict[int, str] = {}

    def dump(self) -> dict[str, Any]:
        return {"model": self.model, "index": self.index.dump(), "memory_ids": self.by_id}


class MemoryProjection(SnapshottingProjection):
    name = "memory"
    version = 1

    def __init__(
        self,
        keys: KeyStore,
        options: IndexOptions | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.options = options or IndexOptions()
        self.trainer = trainer or Trainer()
        self._users: dict[str, _UserMemories] = {}
        self._skipped = 0

    def close(self) -> None:
        """Stop the training thread (a pending training is planned again on restore)."""
        self.trainer.close()

    # --- snapshots --------------------------------------------------------------------

    def snapshot_state(self) -> Any:
        with self.lock:
            sections: dict[str, Any] = {}
            for user, memories in self._users.items():
                section = self._seal_section(user, memories)
                if section is not None:
                    sections[user] = section
            return {"users": sections}

    def _seal_section(self, user: str, memories: _UserMemories) -> dict[str, Any] | None:
        plain = pack(memories.dump())
        if not memories.key_id:
            return {"key_id": "", "data": plain}
        key = self.keys.key(user, memories.key_id)
        if key is None:
            return None  # destroyed under us: the section is shredded
        return {"key_id": key.key_id, "data": key.seal(plain, seal_context(SNAPSHOT, user))}

    def _open_section(self, user: str, section: dict[str, Any]) -> dict[str, Any] | None:
        key_id = section["key_id"]
        if not key_id:
            data: dict[str, Any] = unpack(section["data"])
            return data
        key = self.keys.key(user, key_id)
        if key is None:
            return None
        opened: dict[str, Any] = unpack(key.open(section["data"], seal_context(SNAPSHOT, user)))
        return opened

    def restore_state(self, state: Any) -> None:
        with self.lock:
            self._users = {}
            self._skipped = 0
            for user, section in ((state or {}).get("users") or {}).items():
                data = self._open_section(user, section)
                if data is None:
                    continue
                index = VectorIndex.load(data["index"], self.options, self.trainer)
                memories = _UserMemories(section["key_id"], data["model"], index)
                memories.by_id = dict(data["memory_ids"])
                memories.by_position = {p: m for m, p in memories.by_id.items()}
                self._users[user] = memories

    def comparable_state(self, blob: bytes) -> Any:
        """Each user's canonical index contents (ids, vector digest, plan) and id map."""
        users: dict[str, Any] = {}
        for user, section in sorted(unpack(blob)["users"].items()):
            data = self._open_section(user, section)
            if data is None:
                continue
            index = VectorIndex.load(data["index"], self.options, self.trainer, plan=False)
            users[user] = {
                "key_id": section["key_id"],
                "model": data["model"],
                "memory_ids": dict(sorted(data["memory_ids"].items())),
                **index.canonical(),
            }
        return {"users": users}

    # --- events -----------------------------------------------------------------------

    def _on_MemoryAdded(self, record: RecordedEvent) -> None:
        data = record.data
        user, key_id = data["user"], data.get("key_id", "")
        vector = self._embedding(data)
        if vector is None:
            self._skipped += 1
            return
        memories = self._users.get(user)
        if memories is not None and key_id and memories.key_id not in ("", key_id):
            # The user's previous key was destroyed: what it sealed is gone.
            self._drop(user)
            memories = None
        if memories is None:
            index = VectorIndex(len(vector), self.options, self.trainer)
            memories = self._users[user] = _UserMemories(key_id, data["model"], index)
        if memories.model != data["model"] or memories.index.dim != len(vector):
            self._skipped += 1
            return
        memories.key_id = memories.key_id or key_id
        self._forget(user, memories, data["memory_id"], drop_empty=False)
        memories.index.add(np.array([record.position], dtype=np.int64), vector[None, :])
        memories.by_id[data["memory_id"]] = record.position
        memories.by_position[record.position] = data["memory_id"]

    def _embedding(self, data: dict[str, Any]) -> NDArray[np.float32] | None:
        try:
            raw = open_embedding(self.keys, data)
        except SealBroken:
            return None
        if not raw or len(raw) % 4:
            return None
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            return None
        result: NDArray[np.float32] = vector / np.float32(norm)
        return result

    def _on_MemoryForgotten(self, record: RecordedEvent) -> None:
        memories = self._users.get(record.data["user"])
        if memories is not None:
            self._forget(record.data["user"], memories, record.data["memory_id"])

    def _forget(
        self, user: str, memories: _UserMemories, memory_id: str, drop_empty: bool = True
    ) -> None:
        position = memories.by_id.pop(memory_id, None)
        if position is None:
            return
        del memories.by_position[position]
        memories.index.remove([position])
        if drop_empty and not memories.by_id:
            self._drop(user)

    def _on_MemoryKeyDestroyed(self, record: RecordedEvent) -> None:
        memories = self._users.get(record.data["user"])
        if memories is not None and memories.key_id in ("", record.data["key_id"]):
            self._drop(record.data["user"])

    def _drop(self, user: str) -> None:
        self._users.pop(user, None)

    # --- reads (any thread) -----------------------------------------------------------

    def search(
        self, user: str, query: NDArray[np.float32], k: int, model: str | None = None
    ) -> list[MemoryHit]:
        """The user's `k` memories closest to `query` (blocking: call from a thread)."""
        with self.lock:
            memories = self._users.get(user)
            if memories is None:
                return []
            if model is not None and model != memories.model:
                raise EmbeddingModelMismatch(user, memories.model, model)
            query = np.asarray(query, dtype=np.float32).reshape(1, -1)
            scores, ids = memories.index.search(query, min(k, len(memories.by_id)))
            return [
                MemoryHit(memories.by_position[int(i)], int(i), float(s))
                for s, i in zip(scores[0], ids[0], strict=True)
                if int(i) in memories.by_position
            ]

    def position_of(self, user: str, memory_id: str) -> int | None:
        """Where the memory's `MemoryAdded` is in the log (None: not a live memory)."""
        with self.lock:
            memories = self._users.get(user)
            return None if memories is None else memories.by_id.get(memory_id)

    def count(self, user: str) -> int:
        with self.lock:
            memories = self._users.get(user)
            return 0 if memories is None else len(memories.by_id)

    def wait_for_training(self) -> None:
        """Block until every pending IVF training is swapped in (tests, benchmarks)."""
        with self.lock:
            for memories in self._users.values():
                memories.index.wait()

    def statistics(self) -> MemoryStatistics:
        with self.lock:
            indexes = [m.index for m in self._users.values()]
            return MemoryStatistics(
                users=len(indexes),
                memories=sum(len(i) for i in indexes),
                ivf_users=sum(i.kind == "ivf" for i in indexes),
                training=sum(i.training for i in indexes),
                trainings=sum(i.trainings for i in indexes),
                skipped=self._skipped,
            )
