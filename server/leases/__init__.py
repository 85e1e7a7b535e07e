"""Run leases: which node executes a run (see `_base` for the why)."""

from server.leases._base import Lease, MemoryRunLeases, RunLeases
from server.leases._keeper import LeaseKeeper
from server.leases._postgres import PostgresRunLeases
from server.leases._presence import NodePresence

__all__ = [
    "Lease",
    "LeaseKeeper",
    "MemoryRunLeases",
    "NodePresence",
    "PostgresRunLeases",
    "RunLeases",
]
