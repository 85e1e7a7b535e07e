"""The LLM layer: the provider interface, the OpenAI provider, the rate limiter, calls
with retries, the call recorder, prompts and the tool catalog the model is shown.

Public API; every other module in this package is private.
"""

import typing as _typing

from agents.llm._calls import (
    CallRequest,
    CallRunner,
    settling,
)
from agents.llm._catalog import (
    CacheStatistics,
    ToolCatalog,
    ToolCatalogCache,
    catalog_hash,
)
from agents.llm._prompting import (
    STEP_REFERENCE,
    PromptRepository,
    PromptStatistics,
    answer_messages,
    compact_turns,
    intent_messages,
    intent_of,
    plan_messages,
    task_messages,
    verify_messages,
)
from agents.llm._provider import (
    MAX_EMBEDDING_INPUTS,
    ChatResult,
    ChatStream,
    LLMOptions,
    LLMProvider,
    Messages,
    Usage,
    nesting_depth,
    parse_json_object,
    validate_embedding_inputs,
)
from agents.llm._rate_limiter import (
    LimiterOptions,
    LimiterStatistics,
    RateLimiter,
    TokenBucket,
    parse_duration,
)
from agents.llm._recorder import (
    CallRecorder,
    RecorderStatistics,
)
from agents.llm._retry import (
    RetryPolicy,
)
from agents.llm._tokens import estimate_prompt_tokens, estimate_tokens
from agents.llm._tool_form import compact_dict, parse_compact
from agents.llm._tool_selection import ToolSelection, ToolSelector, ToolSelectorCache
from agents.llm._tool_spec import ToolSpec
from events import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from agents.llm._openai import OpenAIProvider

# The OpenAI backends are imported when first named: openai's SDK costs ~0.45 s and ~28 MB
# of every process that imports this package, the offline default's and every CLI command's.
_LAZY = {"OpenAIProvider": "agents.llm._openai"}
if not _typing.TYPE_CHECKING:  # mypy sees the names above, not a catch-all for any name
    __getattr__ = _lazy_attributes(__name__, _LAZY)

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "STEP_REFERENCE",
    "CacheStatistics",
    "CallRecorder",
    "CallRequest",
    "CallRunner",
    "ChatResult",
    "ChatStream",
    "LLMOptions",
    "LLMProvider",
    "LimiterOptions",
    "LimiterStatistics",
    "Messages",
    "OpenAIProvider",
    "PromptRepository",
    "PromptStatistics",
    "RateLimiter",
    "RecorderStatistics",
    "RetryPolicy",
    "TokenBucket",
    "ToolCatalog",
    "ToolCatalogCache",
    "ToolSelection",
    "ToolSelector",
    "ToolSelectorCache",
    "ToolSpec",
    "Usage",
    "answer_messages",
    "catalog_hash",
    "compact_dict",
    "compact_turns",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "intent_messages",
    "intent_of",
    "nesting_depth",
    "parse_compact",
    "parse_duration",
    "parse_json_object",
    "plan_messages",
    "settling",
    "task_messages",
    "validate_embedding_inputs",
    "verify_messages",
]
