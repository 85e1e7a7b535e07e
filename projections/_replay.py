"""Rebuild projections into a scratch place and compare them with the live state.

`replay --verify` relies on this: a projection rebuilt from position 1 up to the live
checkpoint must equal the live state key for key; any difference is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events import EventLog, StoreCorrupted, VerifiedReader
from projections._base import Projection, SnapshottingProjection
from projections._runner import Progress, ProjectionRunner
from projections._state_store import MemoryStateStore, StateStore, unpack


@dataclass(frozen=True, slots=True)
class Difference:
    projection: str
    key: str
    live: Any
    rebuilt: Any


def rebuild(
    log: EventLog,
    projection: Projection,
    until: int,
    progress: Progress | None = None,
    batch_size: int = 5000,
) -> MemoryStateStore:
    """`projection` applied to positions 1..until in a fresh memory state store."""
    scratch = MemoryStateStore()
    runner = ProjectionRunner(
        log,
        scratch,
        [projection],
        batch_size=batch_size,
        snapshot_every=1 << 62,
        reader=VerifiedReader(log).read,
    )
    runner.prepare()
    runner.catch_up(until, progress)
    if runner.position < until:
        raise StoreCorrupted(runner.position + 1, "record missing before the rebuild target")
    if isinstance(projection, SnapshottingProjection):
        runner.flush_snapshots()
    return scratch


def compare(
    name: str,
    live: StateStore,
    rebuilt: StateStore,
    is_snapshot: bool,
    comparable: Callable[[bytes], Any] = unpack,
) -> list[Difference]:
    """Every key whose value differs between live and rebuilt state.

    Snapshots are compared as `comparable` (the projection's `comparable_state`) makes them.
    """
    if is_snapshot:
        live_snapshot, rebuilt_snapshot = live.snapshot(name), rebuilt.snapshot(name)
        live_value = comparable(live_snapshot) if live_snapshot else None
        rebuilt_value = comparable(rebuilt_snapshot) if rebuilt_snapshot else None
        if live_value != rebuilt_value:
            return [Difference(name, "<snapshot>", live_value, rebuilt_value)]
        return []
    live_items, rebuilt_items = dict(live.items(name)), dict(rebuilt.items(name))
    return [
        Difference(name, key.decode(errors="replace"), live_items.get(key), rebuilt_items.get(key))
        for key in sorted(set(live_items) | set(rebuilt_items))
        if live_items.get(key) != rebuilt_items.get(key)
    ]


def verify(
    log: EventLog,
    live: StateStore,
    factories: dict[str, Callable[[], Projection]],
    progress: Callable[[str], Progress | None] | None = None,
) -> list[Difference]:
    """Rebuild each projection up to its live checkpoint and diff it with the live state."""
    with live.pinned() as view:
        return _verify_pinned(log, view, factories, progress)


def _verify_pinned(
    log: EventLog,
    live: StateStore,
    factories: dict[str, Callable[[], Projection]],
    progress: Callable[[str], Progress | None] | None,
) -> list[Difference]:
    differences: list[Difference] = []
    for name, factory in factories.items():
        projection = factory()
        checkpoint = live.checkpoint(name)
        if checkpoint.position and checkpoint.version != projection.version:
            differences.append(
                Difference(name, "<version>", checkpoint.version, projection.version)
            )
            continue
        scratch = rebuild(
            log, projection, checkpoint.position, progress(name) if progress else None
        )
        if isinstance(projection, SnapshottingProjection):
            differences.extend(compare(name, live, scratch, True, projection.comparable_state))
        else:
            differences.extend(compare(name, live, scratch, False))
    return differences
