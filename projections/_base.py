"""What a projection is: a name, a version, and `apply(record)` dispatched by event type.

Two kinds of state:
- `Projection` keeps its state as keys in the state store, read through a write-back
  cache: `apply` loads and saves keys; the runner commits the dirty keys with the
  checkpoint after every batch. Start-up costs nothing: the state is already on disk.
- `SnapshottingProjection` keeps its whole state in memory (histograms, indexes) and
  saves a snapshot every N events with its checkpoint; start-up loads the snapshot and
  applies only the tail of the log after it.

Handlers are methods named `_on_<EventType>`, so a reader sees at once what a
projection reacts to.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from events import RecordedEvent
from projections._state_store import StateStore, pack, unpack

Handler = Callable[[RecordedEvent], None]


class Projection(abc.ABC):
    """A keyed projection (see module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {
            attr[4:]: getattr(self, attr) for attr in dir(type(self)) if attr.startswith("_on_")
        }
        self._state_store: StateStore | None = None
        self._cache: dict[bytes, Any] = {}
        self._dirty: set[bytes] = set()
        # Held while a batch is applied and committed, so in-process readers of
        # in-memory state never see half a batch.
        self.lock = threading.RLock()

    @property
    def handled_types(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def attach(self, store: StateStore) -> None:
        self._state_store = store
        self.discard_changes()

    def apply(self, record: RecordedEvent) -> None:
        handler = self._handlers.get(record.type)
        if handler is not None:
            handler(record)

    # --- state access for handlers ------------------------------------------------

    def load(self, key: bytes) -> Any:
        """The current value of `key` (this batch's writes included), or None."""
        if key in self._cache:
            return self._cache[key]
        assert self._state_store is not None, "projection used before attach()"
        value = self._state_store.get(self.name, key)
        self._cache[key] = value
        return value

    def save(self, key: bytes, value: Any) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def remove(self, key: bytes) -> None:
        self.save(key, None)

    # --- for the runner -------------------------------------------------------------

    def take_changes(self) -> dict[bytes, Any]:
        """The dirty keys of this batch; the cache is emptied (the store has them now)."""
        changes = {key: self._cache[key] for key in self._dirty}
        self.discard_changes()
        return changes

    def discard_changes(self) -> None:
        self._cache.clear()
        self._dirty.clear()


class SnapshottingProjection(Projection):
    """An in-memory projection persisted by periodic snapshots (see module docstring)."""

    @abc.abstractmethod
    def snapshot_state(self) -> Any:
        """The whole state as msgpack-able plain data."""

    @abc.abstractmethod
    def restore_state(self, state: Any) -> None:
        """Replace the state by one `snapshot_state` returned (None: the empty state)."""

    def snapshot(self) -> bytes:
        return pack(self.snapshot_state())

    def comparable_state(self, blob: bytes) -> Any:
        """A snapshot as `replay --verify` compares it; by default its plain data.

        A projection whose snapshot is not canonical (sealed with random nonces, or
        ordered by history) reduces it here to what must equal a rebuild's.
        """
        return unpack(blob)

    def restore(self, blob: bytes | None) -> None:
        self.restore_state(None if blob is None else unpack(blob))

    def take_changes(self) -> dict[bytes, Any]:
        return {}
