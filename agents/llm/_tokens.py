"""Token estimates: what usage counts say when a provider reports none.

Pure functions: the OpenAI provider's limiter, the offline provider and the simulator
all count tokens here, so their numbers agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """About one token per four characters: what usage counts report offline."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[Mapping[str, object]]) -> int:
    """Tokens of a chat request: contents plus a small per-message overhead."""
    contents = (str(m.get("content") or "") for m in messages)
    return sum(estimate_tokens(c) + MESSAGE_OVERHEAD_TOKENS for c in contents)
