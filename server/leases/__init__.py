"""Run leases: which node executes a run (see `_base` for the why)."""

import importlib as _importlib
import typing as _typing

from server.leases._base import Lease, MemoryRunLeases, RunLeases
from server.leases._keeper import LeaseKeeper
from server.leases._presence import NodePresence

if _typing.TYPE_CHECKING:
    from server.leases._postgres import PostgresRunLeases


# The PostgreSQL backend is imported when first named, not with the package: psycopg
# and its pool cost ~9 MB and part of every start of a server that uses LMDB.
_LAZY = {"PostgresRunLeases": "server.leases._postgres"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(_importlib.import_module(_LAZY[name]), name)
    return value


__all__ = [
    "Lease",
    "LeaseKeeper",
    "MemoryRunLeases",
    "NodePresence",
    "PostgresRunLeases",
    "RunLeases",
]
