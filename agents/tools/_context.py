"""What an agent is built with: typed settings from `[agents]` and the shared parts.

The registry builds each agent on first use with one `AgentContext`. Every field is
optional so a test passes only what the agent under test uses; `settings` is a typed
`AgentSettings`, with `extras` for agents outside this package (a test's probe, a
benchmark's hooks) that need values of their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agents.embeddings import Embedder
from agents.llm import LLMProvider
from agents.tools._document_indexer import IndexerOptions
from events import EventStore
from projections import DocumentsProjection, KeyStore, MemoryProjection


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The `[agents]` keys the built-in agents read. Empty or 0 means "the tool's default"
    (each tool names its own), so a test sets only what it is about."""

    quote_endpoint: str = ""
    max_file_bytes: int = 0
    calendar_path: str = ""
    mailbox_path: str = ""
    outbox_path: str = ""
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = 0
    web_allow: tuple[str, ...] = ()
    web_max_bytes: int = 0
    web_timeout_s: float = 0.0
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryAccess:
    """What the server hands the memory agent (`AgentContext.memory`).

    `index` is the running `memory` projection and `wait_for` the projection runner's
    wait (read-your-writes); without them (`autoagent run`) remember and forget work
    and recall reports it needs the server.
    """

    keys: KeyStore
    embedder: Embedder
    index: MemoryProjection | None = None
    wait_for: Callable[[int], Awaitable[None]] | None = None


@dataclass(frozen=True)
class DocumentsAccess:
    """What the server hands the documents agent (`AgentContext.documents`).

    `index` is the running `documents` projection and `wait_for` its runner's wait
    (read-your-writes); `options` come from `[agents]` documents_* keys.
    """

    embedder: Embedder
    index: DocumentsProjection | None = None
    wait_for: Callable[[int], Awaitable[None]] | None = None
    options: IndexerOptions = field(default_factory=IndexerOptions)


@dataclass(frozen=True)
class AgentContext:
    """What an agent may need when it is built; all optional so tests pass only what they use."""

    settings: AgentSettings = field(default_factory=AgentSettings)
    workspace_roots: tuple[Path, ...] = ()
    http: httpx.AsyncClient | None = None  # shared and pooled
    llm: LLMProvider | None = None
    store: EventStore | None = None  # for agents that append their own events
    memory: MemoryAccess | None = None  # key store, embedder, live index
    documents: DocumentsAccess | None = None  # embedder, live index


def positive_or(value: float, default: float) -> float:
    """`value` when it is set (> 0), else the tool's default."""
    return value if value > 0 else default
