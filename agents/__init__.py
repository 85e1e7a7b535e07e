"""Agents: everything that thinks or acts, in sub-layers (a lower one never imports a
higher one): `llm` and `embeddings` <- `offline` <- `tools` <- `runs`; `errors` under all.

This module re-exports the names most callers need; each sub-package's `__init__`
names its own public API, and every module starting with `_` is private.
"""

import typing as _typing

from agents.embeddings import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingRequestFailed,
    EmbeddingStatistics,
    InvalidEmbeddingInput,
    InvalidEmbeddingResponse,
    LocalEmbedder,
    UnknownEmbeddingProvider,
    open_embedder,
)
from agents.errors import (
    AgentError,
    AuthenticationFailed,
    BadRequest,
    InvalidModelOutput,
    LLMError,
    LLMTimeout,
    PromptUnreadable,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RetriesExhausted,
    UnknownModel,
    UnknownPrompt,
    UnknownProvider,
)
from agents.llm import (
    MAX_EMBEDDING_INPUTS,
    CacheStatistics,
    CallRecorder,
    CallRequest,
    CallRunner,
    ChatResult,
    ChatStream,
    LimiterOptions,
    LimiterStatistics,
    LLMOptions,
    LLMProvider,
    Messages,
    PromptRepository,
    PromptStatistics,
    RateLimiter,
    RecorderStatistics,
    RetryPolicy,
    TokenBucket,
    ToolCatalog,
    ToolCatalogCache,
    ToolSpec,
    Usage,
    answer_messages,
    catalog_hash,
    intent_messages,
    parse_duration,
    parse_json_object,
    plan_messages,
    task_messages,
    verify_messages,
)
from agents.offline import (
    PROVIDERS,
    OfflineProvider,
    Simulator,
    SimulatorOptions,
    SimulatorStatistics,
    create_provider,
    open_provider,
    serve_simulator,
)
from events import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from agents.embeddings import OpenAIEmbedder, OpenAIEmbedderOptions
    from agents.llm import OpenAIProvider

# The OpenAI backends are imported when first named: openai's SDK costs ~0.45 s and ~28 MB
# of every process that imports this package, the offline default's and every CLI command's.
_LAZY = {
    "OpenAIEmbedder": "agents.embeddings",
    "OpenAIEmbedderOptions": "agents.embeddings",
    "OpenAIProvider": "agents.llm",
}
if not _typing.TYPE_CHECKING:  # mypy sees the names above, not a catch-all for any name
    __getattr__ = _lazy_attributes(__name__, _LAZY)

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "PROVIDERS",
    "AgentError",
    "AuthenticationFailed",
    "BadRequest",
    "CacheStatistics",
    "CallRecorder",
    "CallRequest",
    "CallRunner",
    "ChatResult",
    "ChatStream",
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingError",
    "EmbeddingRequestFailed",
    "EmbeddingStatistics",
    "InvalidEmbeddingInput",
    "InvalidEmbeddingResponse",
    "InvalidModelOutput",
    "LLMError",
    "LLMOptions",
    "LLMProvider",
    "LLMTimeout",
    "LimiterOptions",
    "LimiterStatistics",
    "LocalEmbedder",
    "Messages",
    "OfflineProvider",
    "OpenAIEmbedder",
    "OpenAIEmbedderOptions",
    "OpenAIProvider",
    "PromptRepository",
    "PromptStatistics",
    "PromptUnreadable",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "RateLimiter",
    "RecorderStatistics",
    "RetriesExhausted",
    "RetryPolicy",
    "Simulator",
    "SimulatorOptions",
    "SimulatorStatistics",
    "TokenBucket",
    "ToolCatalog",
    "ToolCatalogCache",
    "ToolSpec",
    "UnknownEmbeddingProvider",
    "UnknownModel",
    "UnknownPrompt",
    "UnknownProvider",
    "Usage",
    "answer_messages",
    "catalog_hash",
    "create_provider",
    "intent_messages",
    "open_embedder",
    "open_provider",
    "parse_duration",
    "parse_json_object",
    "plan_messages",
    "serve_simulator",
    "task_messages",
    "verify_messages",
]
