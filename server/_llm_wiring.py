"""Map the `[llm]` section onto the agents layer's options (agents never import server)."""

from __future__ import annotations

from agents import LLMOptions
from server.config import LLMConfig


def llm_options(config: LLMConfig) -> LLMOptions:
    """The `LLMOptions` the providers take, from the checked `[llm]` config."""
    return LLMOptions(
        provider=config.provider,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        model=config.model,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        rpm_limit=config.rpm_limit,
        tpm_limit=config.tpm_limit,
        max_parallel_calls=config.max_parallel_calls,
    )
