"""Where projection state and checkpoints live: one interface, LMDB and memory backends.

State is a key-value space per projection (msgpack values). A projection's dirty keys,
its checkpoint and, for snapshotting projections, its snapshot are committed in ONE
transaction, so after a crash the state is exactly "every event up to the checkpoint
applied once". The LMDB backend is its own environment (`<data_dir>/projections`),
separate from the event log, so projection writes never contend with appends.

`MemoryStateStore(base=...)` layers uncommitted-to-disk state over a read-only base:
the admin CLI uses it to bring a lagging projection up to the log head without writing.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from projections.errors import CheckpointMoved, ProjectionStoreMissing

_DELETED = object()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a projection has applied the log, and with which projection version."""

    position: int = 0
    version: int = 0


@dataclass(frozen=True, slots=True)
class StateCommit:
    """Everything one projection persists in one transaction."""

    name: str
    version: int
    expected_position: int
    position: int
    changes: Mapping[bytes, Any]  # value None deletes the key
    snapshot: bytes | None = None


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(raw: bytes | memoryview) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


class StateStore(abc.ABC):
    """Persistent state of projections; sync, called from worker threads."""

    @abc.abstractmethod
    def checkpoint(self, name: str) -> Checkpoint: ...

    @abc.abstractmethod
    def get(self, name: str, key: bytes) -> Any: ...

    @abc.abstractmethod
    def items(self, name: str, prefix: bytes = b"") -> list[tuple[bytes, Any]]:
        """Every (key, value) of a projection under `prefix`, in key order."""

    @abc.abstractmethod
    def snapshot(self, name: str) -> bytes | None: ...

    @abc.abstractmethod
    def commit(self, commits: list[StateCommit]) -> None:
        """Apply several projections' commits atomically; `CheckpointMoved` on a race."""

    def reset(self, name: str) -> None:
        """Forget all state, snapshot and checkpoint of a projection (for a rebuild)."""
        self.replace(name, 0, 0, [])

    @abc.abstractmethod
    def replace(
        self,
        name: str,
        version: int,
        position: int,
        items: list[tuple[bytes, Any]],
        snapshot: bytes | None = None,
    ) -> None:
        """Swap in a whole rebuilt state (or snapshot) and checkpoint at once (`replay`)."""

    @contextlib.contextmanager
    def pinned(self) -> Iterator[StateStore]:
        """A consistent read-only view for several reads (LMDB: one read transaction)."""
        yield self

    @contextlib.contextmanager
    def batch_view(self) -> Iterator[StateStore]:
        """What the runner reads one batch's keys through, while it applies the batch
        (it commits after leaving it). LMDB: one read transaction for the batch."""
        yield self

    @abc.abstractmethod
    def close(self) -> None: ...


class LmdbStateStore(StateStore):
    """Projection state in its own LMDB environment."""

    def __init__(self, env: lmdb.Environment, readonly: bool) -> None:
        self._env = env
        self.readonly = readonly
        self._state = env.open_db(b"state", create=not readonly)
        self._meta = env.open_db(b"checkpoints", create=not readonly)
        self._snapshots = env.open_db(b"snapshots", create=not readonly)
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, path: Path, *, readonly: bool = False, sync: bool = True, map_size: int = 1 << 30
    ) -> LmdbStateStore:
        if readonly and not (path / "data.mdb").is_file():
            raise ProjectionStoreMissing(f"{path}: no projection state yet")
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(
            str(path), map_size=map_size, max_dbs=8, readonly=readonly, sync=sync, metasync=sync
        )
        try:
            return cls(env, readonly)
        except lmdb.Error as exc:
            env.close()
            raise ProjectionStoreMissing(f"{path}: no projection state yet ({exc})") from exc

    def _read(self, fn: Any) -> Any:
        for _ in range(2):
            try:
                with self._env.begin(buffers=True) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)
        raise ProjectionStoreMissing("projection map keeps being resized")

    def checkpoint(self, name: str) -> Checkpoint:
        def read(txn: Any) -> Checkpoint:
            raw = txn.get(name.encode(), db=self._meta)
            return Checkpoint(*unpack(raw)) if raw is not None else Checkpoint()

        result: Checkpoint = self._read(read)
        return result

    def get(self, name: str, key: bytes) -> Any:
        def read(txn: Any) -> Any:
            raw = txn.get(_key(name, key), db=self._state)
            return None if raw is None else unpack(raw)

        return self._read(read)

    def items(self, name: str, prefix: bytes = b"") -> list[tuple[bytes, Any]]:
        start = _key(name, prefix)
        strip = len(name.encode()) + 1

        def read(txn: Any) -> list[tuple[bytes, Any]]:
            cursor = txn.cursor(self._state)
            out: list[tuple[bytes, Any]] = []
            if not cursor.set_range(start):
                return out
            for key, value in cursor:
                key = bytes(key)
                if not key.startswith(start):
                    break
                out.append((key[strip:], unpack(value)))
            return out

        result: list[tuple[bytes, Any]] = self._read(read)
        return result

    def snapshot(self, name: str) -> bytes | None:
        def read(txn: Any) -> bytes | None:
            raw = txn.get(name.encode(), db=self._snapshots)
            return None if raw is None else bytes(raw)

        result: bytes | None = self._read(read)
        return result

    def commit(self, commits: list[StateCommit]) -> None:
        while True:
            try:
                return self._commit_once(commits)
            except lmdb.MapFullError:
                self._grow()

    def _commit_once(self, commits: list[StateCommit]) -> None:
        # One packer for the commit's values (`pack` makes one per value) and each
        # projection's key prefix made once: a rebuild commits 10,000 records' keys.
        to_bytes = msgpack.Packer(use_bin_type=True).pack
        with self._lock, self._env.begin(write=True) as txn:
            for commit in commits:
                self._check_position(txn, commit)
                prefix, state = _key(commit.name, b""), self._state
                for key, value in commit.changes.items():
                    if value is None:
                        txn.delete(prefix + key, db=state)
                    else:
                        txn.put(prefix + key, to_bytes(value), db=state)
                if commit.snapshot is not None:
                    txn.put(commit.name.encode(), commit.snapshot, db=self._snapshots)
                txn.put(
                    commit.name.encode(), pack([commit.position, commit.version]), db=self._meta
                )

    def _check_position(self, txn: Any, commit: StateCommit) -> None:
        raw = txn.get(commit.name.encode(), db=self._meta)
        actual = Checkpoint(*unpack(raw)) if raw is not None else Checkpoint()
        if actual.position != commit.expected_position:
            raise CheckpointMoved(commit.name, commit.expected_position, actual.position)

    def _grow(self) -> None:
        with self._lock:
            self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def replace(
        self,
        name: str,
        version: int,
        position: int,
        items: list[tuple[bytes, Any]],
        snapshot: bytes | None = None,
    ) -> None:
        with self._lock, self._env.begin(write=True) as txn:
            _delete_prefix(txn, self._state, _key(name, b""))
            txn.delete(name.encode(), db=self._snapshots)
            if snapshot is not None:
                txn.put(name.encode(), snapshot, db=self._snapshots)
            for key, value in items:
                txn.put(_key(name, key), pack(value), db=self._state)
            txn.put(name.encode(), pack([position, version]), db=self._meta)

    @contextlib.contextmanager
    def batch_view(self) -> Iterator[StateStore]:
        """One read transaction for a batch's reads: a rebuild loads about one new key
        every 16 records, and a transaction per load cost ~5 % of its time (cProfile)."""
        for _ in range(2):
            try:
                txn = self._env.begin(buffers=True)
                break
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)
        else:
            raise ProjectionStoreMissing("projection map keeps being resized")
        try:
            yield _PinnedState(self, txn)
        finally:
            txn.abort()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[StateStore]:
        """A read-only view of this state as of now, held in one read transaction.

        Readers that combine several reads (verify, the CLI's overlay) see one
        consistent state even while a server commits beside them.
        """
        txn = self._env.begin(buffers=True)
        try:
            yield _PinnedState(self, txn)
        finally:
            txn.abort()

    def close(self) -> None:
        with self._lock:
            self._env.close()


class PinnedView(StateStore):
    """The writes of a pinned view (one fixed read snapshot of a state store): refused.
    Mixed in before the backend's class."""

    def commit(self, commits: list[StateCommit]) -> None:
        raise ProjectionStoreMissing("a pinned state view is read-only")

    def replace(
        self,
        name: str,
        version: int,
        position: int,
        items: list[tuple[bytes, Any]],
        snapshot: bytes | None = None,
    ) -> None:
        raise ProjectionStoreMissing("a pinned state view is read-only")


class _PinnedState(PinnedView, LmdbStateStore):
    """An `LmdbStateStore` whose reads all go through one fixed read transaction."""

    def __init__(self, store: LmdbStateStore, txn: Any) -> None:  # shares store's handles
        self._env = store._env
        self.readonly = True
        self._state = store._state
        self._meta = store._meta
        self._snapshots = store._snapshots
        self._lock = store._lock
        self._txn = txn

    def _read(self, fn: Any) -> Any:
        return fn(self._txn)

    def close(self) -> None:
        return None


class MemoryStateStore(StateStore):
    """Projection state in dicts; optionally an overlay over a read-only `base`.

    The base must not change while the overlay is used (pass `LmdbStateStore.pinned()`),
    or keys read from it later would include events the overlay applies again.

    Values are kept packed (msgpack bytes) exactly as LMDB keeps them, so every read
    is a fresh copy: a handler changing a loaded value in place cannot alter the
    stored state behind a failed commit's back.
    """

    def __init__(self, base: StateStore | None = None) -> None:
        self._base = base
        self._state: dict[str, dict[bytes, bytes | None]] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._snapshots: dict[str, bytes] = {}
        self._reset: set[str] = set()
        self._lock = threading.Lock()

    def _layer(self, name: str) -> dict[bytes, bytes | None]:
        return self._state.setdefault(name, {})

    def _base_for(self, name: str) -> StateStore | None:
        return self._base if name not in self._reset else None

    def checkpoint(self, name: str) -> Checkpoint:
        if name in self._checkpoints:
            return self._checkpoints[name]
        base = self._base_for(name)
        return base.checkpoint(name) if base else Checkpoint()

    def get(self, name: str, key: bytes) -> Any:
        with self._lock:
            layer = self._layer(name)
            if key in layer:
                packed = layer[key]
                return None if packed is None else unpack(packed)
        base = self._base_for(name)
        return base.get(name, key) if base else None

    def items(self, name: str, prefix: bytes = b"") -> list[tuple[bytes, Any]]:
        base = self._base_for(name)
        merged: dict[bytes, Any] = dict(base.items(name, prefix)) if base else {}
        with self._lock:
            for key, packed in self._layer(name).items():
                if key.startswith(prefix):
                    merged[key] = _DELETED if packed is None else unpack(packed)
        return sorted((k, v) for k, v in merged.items() if v is not _DELETED)

    def snapshot(self, name: str) -> bytes | None:
        if name in self._snapshots:
            return self._snapshots[name]
        base = self._base_for(name)
        return base.snapshot(name) if base else None

    def commit(self, commits: list[StateCommit]) -> None:
        with self._lock:
            for commit in commits:
                actual = self._checkpoints.get(commit.name)
                if actual is None:
                    base = self._base_for(commit.name)
                    actual = base.checkpoint(commit.name) if base else Checkpoint()
                if actual.position != commit.expected_position:
                    raise CheckpointMoved(commit.name, commit.expected_position, actual.position)
            # Everything is encoded before anything changes: all or nothing, as in LMDB.
            encoded = [
                {key: None if value is None else pack(value) for key, value in c.changes.items()}
                for c in commits
            ]
            for commit, changes in zip(commits, encoded, strict=True):
                self._layer(commit.name).update(changes)
                if commit.snapshot is not None:
                    self._snapshots[commit.name] = commit.snapshot
                self._checkpoints[commit.name] = Checkpoint(commit.position, commit.version)

    def replace(
        self,
        name: str,
        version: int,
        position: int,
        items: list[tuple[bytes, Any]],
        snapshot: bytes | None = None,
    ) -> None:
        with self._lock:
            self._reset.add(name)
            self._state[name] = {key: pack(value) for key, value in items}
            self._snapshots.pop(name, None)
            if snapshot is not None:
                self._snapshots[name] = snapshot
            self._checkpoints[name] = Checkpoint(position, version)

    def close(self) -> None:
        return None


def _key(name: str, key: bytes) -> bytes:
    return name.encode() + b"\x00" + key


def _delete_prefix(txn: Any, db: Any, prefix: bytes) -> None:
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    while bytes(cursor.key()).startswith(prefix):
        if not cursor.delete():
            break
