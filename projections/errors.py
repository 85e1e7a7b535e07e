"""Errors of the projections package.

AutoagentError (events.errors)
 +-- ProjectionError                a projection could not be built, stored or read
      +-- UnknownProjection         a name no projection is registered under
      +-- CheckpointMoved           someone else advanced a checkpoint under us (replay
      |                             beside a running server); the runner reloads
      +-- ProjectionStoreMissing    no projection state in this data dir (or database) yet
      +-- ProjectionStoreUnreachable  the PostgreSQL server of the state cannot be reached
      +-- ProjectionStoreFailed     the PostgreSQL state store failed a read or a write
      +-- ProjectionMismatch        `replay --verify` found live state differing from a rebuild
      +-- EmbeddingModelMismatch    a query embedded with another model than the memories
      +-- CollectionModelMismatch   a query or document embedded with another model than
                                    the documents collection
(KeyStoreError, KeyStoreReadOnly and SealBroken live in events.errors, beside the key
store; they are re-exported here for the memory projection's callers.)
"""

from __future__ import annotations

from events.errors import AutoagentError, KeyStoreError, KeyStoreReadOnly, SealBroken

__all__ = [
    "CheckpointMoved",
    "CollectionModelMismatch",
    "EmbeddingModelMismatch",
    "KeyStoreError",
    "KeyStoreReadOnly",
    "ProjectionError",
    "ProjectionMismatch",
    "ProjectionStoreFailed",
    "ProjectionStoreMissing",
    "ProjectionStoreUnreachable",
    "SealBroken",
    "UnknownProjection",
]


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


class ProjectionStoreUnreachable(ProjectionError):
    """The PostgreSQL server holding projection state cannot be reached (or refuses us).

    `target` names where the URL points without its password; `reason` is the driver's.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"cannot open the projection state at {target}: {reason}")


class ProjectionStoreFailed(ProjectionError):
    """A read or write of the PostgreSQL projection state failed (a dropped connection,
    a server error), or the store was used after `close()`."""


class ProjectionMismatch(ProjectionError):
    """Live projection state differs from a fresh rebuild."""


class EmbeddingModelMismatch(ProjectionError):
    """A query vector from another embedding model than the one the memories used."""

    def __init__(self, user: str, indexed: str, query: str) -> None:
        self.user = user
        self.indexed = indexed
        self.query = query
        super().__init__(
            f"the memories of user {user!r} were embedded with {indexed!r}, "
            f"the query with {query!r}; they cannot be compared"
        )


class CollectionModelMismatch(ProjectionError):
    """A query embedded with another model (or vector length) than the collection's."""

    def __init__(self, collection: str, indexed: str, query: str) -> None:
        self.collection = collection
        self.indexed = indexed
        self.query = query
        super().__init__(
            f"the documents of collection {collection!r} were embedded with {indexed!r}, "
            f"the query with {query!r}; they cannot be compared"
        )
