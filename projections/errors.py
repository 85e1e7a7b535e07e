"""Errors of the projections package.

AutoagentError (events.errors)
 +-- ProjectionError                a projection could not be built, stored or read
      +-- UnknownProjection         a name no projection is registered under
      +-- CheckpointMoved           someone else advanced a checkpoint under us (replay
      |                             beside a running server); the runner reloads
      +-- ProjectionStoreMissing    no projection state in this data dir yet
      +-- ProjectionMismatch        `replay --verify` found live state differing from a rebuild
      +-- KeyStoreError             a memory key could not be read, stored or destroyed
      |    +-- KeyStoreReadOnly     a write to a key store opened read-only
      +-- EmbeddingModelMismatch    a query embedded with another model than the memories
      +-- CollectionModelMismatch   a query or document embedded with another model than
      |                             the documents collection
      +-- SealBroken                a sealed value does not open with its key (altered, or
                                    sealed for another user, memory or field)
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


class KeyStoreError(ProjectionError):
    """A memory key could not be read, stored or destroyed."""


class KeyStoreReadOnly(KeyStoreError):
    """A write to a key store opened read-only (the admin CLI's)."""


class SealBroken(ProjectionError):
    """A sealed value does not open with its key: altered, or sealed for another context."""

    def __init__(self, user: str, key_id: str, reason: str) -> None:
        self.user = user
        self.key_id = key_id
        self.reason = reason
        super().__init__(
            f"a sealed memory value of user {user!r} (key {key_id}) does not open: {reason}"
        )


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
