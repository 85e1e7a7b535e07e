"""Errors of the projections package.

AutoagentError (events.errors)
 +-- ProjectionError                a projection could not be built, stored or read
      +-- UnknownProjection         a name no projection is registered under
      +-- CheckpointMoved           someone else advanced a checkpoint under us (replay
      |                             beside a running server); the runner reloads
      +-- ProjectionStoreMissing    no projection state in this data dir yet
      +-- ProjectionMismatch        `replay --verify` found live state differing from a rebuild
"""

from __future__ import annotations

from events.errors import AutoagentError


class ProjectionError(AutoagentError):
    """A projection could not be built, stored or read."""


class UnknownProjection(ProjectionError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown projection {name!r}; known: {', '.join(sorted(known))}")


class CheckpointMoved(ProjectionError):
    def __init__(self, name: str, expected: int, actual: int) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"checkpoint of projection {name!r} moved: expected {expected}, found {actual}"
        )


class ProjectionStoreMissing(ProjectionError):
    """No projection state has been written in this data dir yet."""


class ProjectionMismatch(ProjectionError):
    """Live projection state differs from a fresh rebuild."""
