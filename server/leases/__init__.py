"""Run leases: which node executes a run (see `_base` for the why)."""

from server.leases._base import Lease, MemoryRunLeases, RunLeases
from server.leases._keeper import LeaseKeeper
from server.leases._postgres import PostgresRunLeases

__all__ = ["Lease", "LeaseKeeper", "MemoryRunLeases", "PostgresRunLeases", "RunLeases"]
