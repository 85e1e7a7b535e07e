"""`NodePresence`: one running node per node id on a shared log.

Two nodes started with the same `server.node_id` would each take the other's run
leases for their own (a lease is held by a node id), so both would execute the same
runs. Each running node therefore holds a presence row in the leases table, keyed by
its node id and held by this process alone (a random instance name), renewed like a
run lease. A node whose id another live process holds waits until that row lapses (a
node that crashed less than a TTL ago and is starting again) and is refused when it
does not (another node runs with that id). A node that stops cleanly deletes its row,
so starting it again is immediate.
"""

from __future__ import annotations

import logging
import uuid

import trio

from server.errors import LeaseStoreError, NodeIdInUse
from server.leases._base import NODE_KEY_PREFIX, RunLeases

log = logging.getLogger(__name__)
CLAIM_RETRY_S = 0.5
RENEWALS_PER_TTL = 3
GIVE_BACK_WAIT_S = 5.0


class NodePresence:
    """This process's claim on its node id."""

    def __init__(self, leases: RunLeases) -> None:
        self.node_id = leases.node_id
        self.ttl_s = leases.ttl_s
        self._key = NODE_KEY_PREFIX + leases.node_id
        self._mine = leases.as_holder(f"{leases.node_id}#{uuid.uuid4().hex[:12]}")

    async def claim(self) -> None:
        """Hold the node id, waiting up to 1.5 TTL for a previous holder's row to lapse;
        `NodeIdInUse` when it keeps being renewed (another node runs with this id)."""
        deadline = trio.current_time() + self.ttl_s * 1.5
        waited = False
        while not await trio.to_thread.run_sync(self._mine.acquire, self._key):
            if trio.current_time() >= deadline:
                raise NodeIdInUse(self.node_id)
            if not waited:
                log.warning(
                    "node id %s is held by another process; waiting up to %.0f s for it to "
                    "lapse (a previous run of this node that stopped without a goodbye)",
                    self.node_id,
                    self.ttl_s * 1.5,
                )
                waited = True
            await trio.sleep(CLAIM_RETRY_S)

    async def keep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew the claim until cancelled (`give_back` ends it)."""
        task_status.started()
        while True:
            await trio.sleep(self.ttl_s / RENEWALS_PER_TTL)
            await self._renew()

    async def give_back(self) -> None:
        """Delete the claim, so this node id may start again at once; shielded, bounded:
        a failure only leaves the row to lapse within the TTL."""
        with trio.CancelScope(shield=True), trio.move_on_after(GIVE_BACK_WAIT_S):
            try:
                await trio.to_thread.run_sync(self._mine.release, self._key)
            except LeaseStoreError as exc:
                log.warning("could not give node id %s back: %s", self.node_id, exc)

    async def _renew(self) -> None:
        try:
            if await trio.to_thread.run_sync(self._mine.renew, [self._key]):
                return
            if not await trio.to_thread.run_sync(self._mine.acquire, self._key):
                log.error(
                    "another node runs with node id %s: give each node its own server.node_id",
                    self.node_id,
                )
        except LeaseStoreError as exc:
            log.warning("renewing node id %s: %s", self.node_id, exc)
