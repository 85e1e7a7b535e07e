"""`autoagent bench`: simulator + baseline and optimized servers, one workload, a scorecard.

Public API; every other module in this package is private.
"""

from server.bench._command import (
    add_bench_parser,
    bench_command,
)
from server.bench._world import (
    World,
)

__all__ = [
    "World",
    "add_bench_parser",
    "bench_command",
]
