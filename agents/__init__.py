"""Agents: the LLM layer (providers, rate limiter, offline model, simulator) and tool metadata.

Public API; everything else in this package is private. The orchestrator (planner,
executor, verifier) and the tools come in later issues.
"""

from .calls import CallRequest, CallRunner
from .catalog import CacheStatistics, ToolCatalog, ToolCatalogCache, ToolSpec, catalog_hash
from .embedder import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingRequestFailed,
    EmbeddingStatistics,
    InvalidEmbeddingInput,
    InvalidEmbeddingResponse,
    UnknownEmbeddingProvider,
    open_embedder,
)
from .errors import (
    AgentError,
    AuthenticationFailed,
    BadRequest,
    InvalidModelOutput,
    LLMError,
    LLMTimeout,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RetriesExhausted,
    UnknownModel,
    UnknownPrompt,
    UnknownProvider,
)
from .llm import (
    MAX_EMBEDDING_INPUTS,
    ChatResult,
    ChatStream,
    LLMOptions,
    LLMProvider,
    Messages,
    Usage,
    parse_json_object,
)
from .local_embedder import LocalEmbedder
from .offline_provider import OfflineProvider
from .openai_embedder import OpenAIEmbedder, OpenAIEmbedderOptions
from .openai_provider import OpenAIProvider
from .prompting import (
    PromptRepository,
    PromptStatistics,
    answer_messages,
    intent_messages,
    plan_messages,
    task_messages,
    verify_messages,
)
from .providers import PROVIDERS, create_provider, open_provider
from .rate_limiter import (
    LimiterOptions,
    LimiterStatistics,
    RateLimiter,
    TokenBucket,
    parse_duration,
)
from .recorder import CallRecorder, RecorderStatistics
from .retry import RetryPolicy
from .simulator import Simulator, SimulatorOptions, SimulatorStatistics, serve_simulator

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
