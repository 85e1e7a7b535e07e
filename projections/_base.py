"""What a projection is: a name, a version, and `apply(record)` dispatched by event type.

Two kinds of state:
- `Projection` keeps its state as keys in the state store, read through a write-back
  cache: `apply` loads and saves keys; the runner commits the dirty keys with the
  checkpoint after every batch. Start-up costs nothing: the state is already on disk.
- `SnapshottingProjection` keeps its whole state in memory (histograms, indexes) and
  saves a snapshot every N events with its checkpoint; start-up loads the snapshot and
  applies only the tail of the log after it.

Handlers are methods named `_on_<EventType>`, so a reader sees at once what a
projection reacts to; they are also what it declares it reads (`reads`): the runner
hands it records of those types only and decodes no payload that no projection reads.

A keyed projection's cache stays warm across batches: the values it saved are kept
once committed (the runner drops them all when a commit fails), the most recently
saved `COMMITTED_KEYS` of them, so a key written batch after batch is read from the
store and unpacked once. A value loaded and not saved again is not kept (a handler
may have changed it in place). A saved value belongs to the state from then on:
change it only through `load` and `save`, under one key.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from events import RecordedEvent
from projections._state_store import StateStore, pack, unpack

Handler = Callable[[RecordedEvent], None]

COMMITTED_KEYS = 4096  # committed values a keyed projection keeps in memory, at most


class Projection(abc.ABC):
    """A keyed projection (see module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {
            attr[4:]: getattr(self, attr) for attr in dir(type(self)) if attr.startswith("_on_")
        }
        self._reads = frozenset(self._handlers)
        self._state_store: StateStore | None = None
        self._cache: dict[bytes, Any] = {}  # this batch: loaded and saved values
        self._dirty: set[bytes] = set()
        # Values as committed, equal to the store's; oldest saved first (a plain dict
        # keeps insertion order; `take_changes` moves a key saved again to the end).
        self._committed: dict[bytes, Any] = {}
        # Held while a batch is applied and committed, so in-process readers of
        # in-memory state never see half a batch.
        self.lock = threading.RLock()

    @property
    def handled_types(self) -> frozenset[str]:
        return self._reads

    @property
    def reads(self) -> frozenset[str] | None:
        """The event types `apply` needs to see; None: every type.

        By default the types of the `_on_<EventType>` handlers; a projection that
        overrides `apply` sees every type unless it overrides this too.
        """
        return None if self.handlers is None else self._reads

    @property
    def handlers(self) -> Mapping[str, Handler] | None:
        """`apply` as a table, event type -> handler; None when `apply` is overridden."""
        return None if type(self).apply is not Projection.apply else self._handlers

    def attach(self, store: StateStore) -> None:
        self._state_store = store
        self.discard_changes()

    @contextlib.contextmanager
    def reading_from(self, view: StateStore) -> Iterator[None]:
        """Load keys through `view` (the runner's view of one batch) until the exit."""
        attached, self._state_store = self._state_store, view
        try:
            yield
        finally:
            self._state_store = attached

    def apply(self, record: RecordedEvent) -> None:
        handler = self._handlers.get(record.type)
        if handler is not None:
            handler(record)

    # --- state access for handlers ------------------------------------------------

    def load(self, key: bytes) -> Any:
        """The current value of `key` (this batch's writes included), or None."""
        if key in self._cache:
            return self._cache[key]
        if key in self._committed:
            value = self._committed[key]
        else:
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
        """The dirty keys of this batch, for the runner to commit; they stay cached as
        committed values (`discard_changes` when the commit fails)."""
        committed, cache = self._committed, self._cache
        for key in cache.keys() - self._dirty:
            committed.pop(key, None)
        changes: dict[bytes, Any] = {}
        for key in self._dirty:
            committed.pop(key, None)  # saved last: evicted last
            committed[key] = changes[key] = cache[key]
        excess = len(committed) - COMMITTED_KEYS
        if excess > 0:
            for key in list(itertools.islice(committed, excess)):
                del committed[key]
        self._cache = {}
        self._dirty = set()
        return changes

    def discard_changes(self) -> None:
        """Forget every cached value: the next batch reads its keys from the store."""
        self._cache.clear()
        self._dirty.clear()
        self._committed.clear()


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
