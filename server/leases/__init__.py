"""Run leases: which node executes a run (see `_base` for the why)."""

import typing as _typing

from events import lazy_attributes as _lazy_attributes
from server.leases._base import Lease, MemoryRunLeases, RunLeases
from server.leases._keeper import LeaseKeeper
from server.leases._presence import NodePresence

if _typing.TYPE_CHECKING:
    from server.leases._postgres import PostgresRunLeases


# The PostgreSQL backend is imported when first named, not with the package: psycopg
# and its pool cost ~9 MB and part of every start of a server that uses LMDB.
_LAZY = {"PostgresRunLeases": "server.leases._postgres"}

if not _typing.TYPE_CHECKING:  # mypy sees the names above, not a catch-all for any name
    __getattr__ = _lazy_attributes(__name__, _LAZY)


__all__ = [
    "Lease",
    "LeaseKeeper",
    "MemoryRunLeases",
    "NodePresence",
    "PostgresRunLeases",
    "RunLeases",
]
