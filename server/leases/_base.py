"""Run leases: which server node executes a run, for how long, and who takes it over.

With several nodes on one log, a run must be executed by exactly one of them at a time.
A node takes a run's lease before executing it, renews every lease it holds well within
the TTL, and gives it back when the run ends or the node shuts down. A node that dies
stops renewing; once its leases have expired, any other node may take them and resume
the runs from the log (the resume rules: completed steps never run again). A node that
stops cleanly marks the leases of its unfinished runs expired, so another node takes
them over at its next look rather than after the TTL.

Why lease rows and not `RunLeased` events: a lease is renewed every few seconds for
as long as a run lasts. As events that would put a renewal record into every run
stream every few seconds (growing the log, the audit and every replay with records
that say nothing about the work), move the run stream's version under the run's own
expected-version appends, and need every node's clock to agree to decide expiry. A row
per running run, updated in place and deleted at the end, costs nothing once the run
ends, and the database's own clock decides expiry for every node alike. What the log
records is the takeover itself: the new holder appends `RunResumed` when it resumes.

Safety without fencing tokens: the holder counts its lease from the moment it *sent*
the last successful renewal (its own monotonic clock), while the database counts it
from when the renewal arrived; so the holder's view always expires first, and the
server stops executing a run whose lease it cannot renew before its own view expires
(`LeaseKeeper`). A node paused longer than the TTL (a stopped VM, a swap storm) could
still write after another node took over; the TTL is the bound to size against that.

Implementations: `MemoryRunLeases` (one process: the LMDB backend, where the data dir
lock already allows one server) and `PostgresRunLeases` (several nodes, one table).
Methods block (the PostgreSQL one does I/O): callers use `trio.to_thread`.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Lease:
    """One run's lease as the leases store sees it; `expired` on the store's clock."""

    run_id: str
    node_id: str
    expired: bool


class RunLeases(abc.ABC):
    """Leases of runs to nodes; one instance per node (`node_id`), TTL in seconds.

    `shared`: other processes may hold leases in the same store, so a lease can be
    taken over and must be renewed in time (False: one process holds them all).
    """

    shared: ClassVar[bool] = True

    def __init__(self, node_id: str, ttl_s: float) -> None:
        if not node_id:
            raise ValueError("a run lease needs a node id")
        if ttl_s <= 0:
            raise ValueError("a run lease needs a positive TTL")
        self.node_id = node_id
        self.ttl_s = ttl_s

    @abc.abstractmethod
    def acquire(self, run_id: str) -> bool:
        """Take the run's lease for `ttl_s` if it is free, expired or already this
        node's; True when this node holds it now."""

    @abc.abstractmethod
    def renew(self, run_ids: Iterable[str]) -> set[str]:
        """Extend this node's leases of `run_ids` by `ttl_s`; returns those still held
        (a run missing from the answer was taken over, or released)."""

    @abc.abstractmethod
    def release(self, run_id: str) -> None:
        """Give the run's lease back, if this node holds it (another node's is kept)."""

    @abc.abstractmethod
    def expire(self, run_id: str) -> None:
        """End this node's lease now but keep its row, expired: the run is unfinished
        (this node stops) and the next node looking for expired leases takes it over
        at once instead of after the TTL."""

    @abc.abstractmethod
    def leases(self) -> list[Lease]:
        """Every lease row, live or expired, in run id order."""

    def expired(self) -> list[str]:
        """Runs whose lease has expired: their node died or lost touch. Takeover
        candidates (`acquire` decides who gets each)."""
        return [lease.run_id for lease in self.leases() if lease.expired]

    def holder(self, run_id: str) -> str | None:
        """The node holding a live lease on the run; None when nobody does."""
        for lease in self.leases():
            if lease.run_id == run_id and not lease.expired:
                return lease.node_id
        return None

    @abc.abstractmethod
    def as_holder(self, holder: str) -> RunLeases:
        """The same store seen by another holder name (sharing its connections; its
        `close` leaves them to this one): a node's presence is held by the instance."""

    def close(self) -> None:  # noqa: B027 - nothing to close in memory
        """Release the store's resources (not the leases: `release` does that)."""


_TABLES_LOCK = threading.Lock()
# Keys of the nodes' presence rows (`server.leases._presence`), beside the run ids (hex,
# so never mistaken for one); `leases()` and `expired()` leave them out.
NODE_KEY_PREFIX = "node:"


class MemoryRunLeases(RunLeases):
    """Leases held in this process: one server alone on its log, or tests of the
    leases themselves (instances share a `table` by passing the same one). `clock` is
    monotonic seconds (tests pass a fake one)."""

    shared: ClassVar[bool] = False

    def __init__(
        self,
        node_id: str,
        ttl_s: float,
        *,
        table: dict[str, tuple[str, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(node_id, ttl_s)
        self._table = {} if table is None else table  # run id -> (node id, expires at)
        self._clock = clock
        self._lock = _TABLES_LOCK  # instances may share a table: one lock for all

    def acquire(self, run_id: str) -> bool:
        with self._lock:
            now = self._clock()
            found = self._table.get(run_id)
            if found is not None and found[0] != self.node_id and found[1] > now:
                return False
            self._table[run_id] = (self.node_id, now + self.ttl_s)
            return True

    def renew(self, run_ids: Iterable[str]) -> set[str]:
        with self._lock:
            now, held = self._clock(), set()
            for run_id in run_ids:
                found = self._table.get(run_id)
                if found is not None and found[0] == self.node_id:
                    self._table[run_id] = (self.node_id, now + self.ttl_s)
                    held.add(run_id)
            return held

    def release(self, run_id: str) -> None:
        with self._lock:
            found = self._table.get(run_id)
            if found is not None and found[0] == self.node_id:
                del self._table[run_id]

    def expire(self, run_id: str) -> None:
        with self._lock:
            found = self._table.get(run_id)
            if found is not None and found[0] == self.node_id:
                self._table[run_id] = (self.node_id, self._clock())

    def leases(self) -> list[Lease]:
        with self._lock:
            now = self._clock()
            return [
                Lease(run_id, node, expires <= now)
                for run_id, (node, expires) in sorted(self._table.items())
                if not run_id.startswith(NODE_KEY_PREFIX)
            ]

    def as_holder(self, holder: str) -> MemoryRunLeases:
        return MemoryRunLeases(holder, self.ttl_s, table=self._table, clock=self._clock)
