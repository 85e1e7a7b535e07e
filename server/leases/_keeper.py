"""`LeaseKeeper`: a node's side of run leases while it runs (why leases: `_base`).

The keeper takes a run's lease before the run executes (`hold`), renews every lease it
holds in one call each `ttl_s / 3`, and ends a lease when the run stops (`let_go`):
deleted when the run ended, marked expired when it did not (a shutdown), so another
node takes it over at its next look. A lease it cannot renew (another node took it, or
the table cannot be reached) stops the run it covers: the run's cancel scope is
cancelled, which leaves the run unfinished in the log with nothing written for the
stop, exactly as a shutdown does, for its new holder to resume.

It stops a run at `STOP_AT` of the TTL counted from when it *sent* its last successful
renewal: the database counts the same lease from when the renewal arrived, so the
node has always stopped before anyone else may take the run over. Renewals use a
thread limiter of their own, so tools and reads filling Trio's default one cannot
delay them. Leases in this process (`MemoryRunLeases`: one server alone on its log)
are renewed inline and never stop a run: nobody else could take it.

One holder per run and node: `hold` refuses a run this node already holds (a resume
racing a takeover on the same node), and `let_go` ends a lease only for the scope that
took it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio

from server.errors import LeaseStoreError
from server.leases._base import RunLeases

log = logging.getLogger(__name__)
RENEWALS_PER_TTL = 3
LET_GO_WAIT_S = 5.0  # bound on ending one lease while the node stops
STOP_AT = 0.8  # of the TTL after the last renewal sent: stop the run here at the latest


class LeaseKeeper:
    """Holds this node's run leases: take, renew, stop on loss, end."""

    def __init__(self, leases: RunLeases) -> None:
        self.leases = leases
        self._held: dict[str, tuple[trio.CancelScope, float]] = {}  # run -> scope, stop by
        self._threads = trio.CapacityLimiter(2)
        self.lost = 0  # leases lost while their run was executing (a metric)

    @property
    def shared(self) -> bool:
        """Whether other nodes may hold leases (anything but the in-process store)."""
        return self.leases.shared

    def held(self) -> list[str]:
        return sorted(self._held)

    async def hold(self, run_id: str, scope: trio.CancelScope) -> bool:
        """Take the run's lease for the run executing under `scope`; False when
        another node holds it, or this node already does (the run must not execute
        here twice)."""
        if run_id in self._held:
            await trio.lowlevel.checkpoint()
            return False
        sent = trio.current_time()
        if not await self._call(self.leases.acquire, run_id):
            return False
        if run_id in self._held:  # taken by another task here meanwhile
            return False
        self._held[run_id] = (scope, sent + self.leases.ttl_s * STOP_AT)
        return True

    async def let_go(self, run_id: str, scope: trio.CancelScope, *, ended: bool) -> None:
        """End the lease `scope` took: deleted when the run `ended` (nothing left to
        take over), marked expired when it did not (another node resumes it at once).
        A failure only costs another node the wait for the TTL."""
        entry = self._held.get(run_id)
        if entry is None or entry[0] is not scope:
            await trio.lowlevel.checkpoint()
            return
        del self._held[run_id]
        # Shielded (a stop must still end the lease), but bounded: an unreachable table
        # only costs another node the TTL, never this node's shutdown.
        with trio.CancelScope(shield=True), trio.move_on_after(LET_GO_WAIT_S):
            try:
                if ended:
                    await self._call(self.leases.release, run_id)
                else:
                    await self._call(self.leases.expire, run_id)
            except LeaseStoreError as exc:
                log.warning("could not end the lease of run %s: %s", run_id, exc)

    async def keep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew until cancelled; stop the runs whose lease is lost or about to lapse."""
        task_status.started()
        interval = self.leases.ttl_s / RENEWALS_PER_TTL
        while True:
            await self.renew_once()
            # Wake for the next renewal, or sooner when a lease is about to lapse.
            await trio.sleep_until(min(trio.current_time() + interval, self.next_deadline()))

    async def renew_once(self) -> None:
        """One renewal of every held lease, then stop what must stop."""
        if not self.shared:
            self.leases.renew(list(self._held))  # in memory: no I/O, and nobody to yield to
            return
        if self._held:
            sent = trio.current_time()
            asked = list(self._held)
            kept: set[str] | None = None
            # A table that stopped answering must not hold the check of the deadlines.
            with trio.move_on_at(self.next_deadline()):
                try:
                    kept = await trio.to_thread.run_sync(
                        self.leases.renew, asked, abandon_on_cancel=True, limiter=self._threads
                    )
                except LeaseStoreError as exc:
                    log.warning("renewing %d run lease(s) failed: %s", len(asked), exc)
            if kept is not None:
                stop_by = sent + self.leases.ttl_s * STOP_AT
                for run_id in asked:
                    entry = self._held.get(run_id)
                    if entry is None:
                        continue
                    if run_id in kept:
                        self._held[run_id] = (entry[0], stop_by)
                    else:
                        self._stop(run_id, "its lease was taken over by another node")
        now = trio.current_time()
        for run_id, (_, stop_by) in list(self._held.items()):
            if stop_by <= now:
                self._stop(run_id, "its lease could not be renewed in time")

    def next_deadline(self) -> float:
        if not self.shared:
            return math.inf
        return min((stop_by for _, stop_by in self._held.values()), default=math.inf)

    async def _call(self, fn: Callable[[str], object], run_id: str) -> bool:
        """A lease call for one run: inline in memory, else in a worker thread."""
        if not self.shared:
            await trio.lowlevel.checkpoint()
            return bool(fn(run_id))
        return bool(await trio.to_thread.run_sync(fn, run_id, limiter=self._threads))

    def _stop(self, run_id: str, why: str) -> None:
        entry = self._held.pop(run_id, None)
        if entry is None:
            return
        self.lost += 1
        log.warning("run %s stops on this node: %s", run_id, why)
        entry[0].cancel()
