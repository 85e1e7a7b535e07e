"""`autoagent bench`: simulator + baseline and optimized servers, one workload, a scorecard.

Public API; every other module in this package is private.
"""

from server.bench._command import (
    add_bench_parser,
    bench_command,
)

__all__ = [
    "add_bench_parser",
    "bench_command",
]
