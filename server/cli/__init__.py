"""The `autoagent` command line: one module per command group.

Public API; every other module in this package is private.
"""

from server.cli._main import (
    console_main,
)

__all__ = [
    "console_main",
]
