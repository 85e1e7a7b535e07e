"""Choosing the LLM provider: one config key (`llm.provider`), one factory.

"offline" needs nothing and is the default, so a fresh machine works; "openai" needs
the key variable named by `llm.api_key_env`, and is checked against the endpoint at
start-up so a wrong URL, key or model fails at once with a line naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import trio

from agents.errors import AuthenticationFailed, UnknownProvider
from agents.llm import CallRecorder, LLMOptions, LLMProvider
from agents.offline._provider import OfflineProvider

PROVIDERS = ("offline", "openai")


def create_provider(
    options: LLMOptions,
    recorder: CallRecorder | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> LLMProvider:
    """The provider `options.provider` names, not yet checked; the caller must aclose it."""
    if options.provider == "offline":
        return OfflineProvider(options, recorder)
    if options.provider == "openai":
        from agents.llm import OpenAIProvider  # openai's SDK is imported for this provider only

        return OpenAIProvider(options, api_key(options, env), recorder)
    raise UnknownProvider(options.provider, PROVIDERS)


def api_key(options: LLMOptions, env: Mapping[str, str] | None = None) -> str:
    """The key from the variable `llm.api_key_env` names; its absence is an error."""
    value = (os.environ if env is None else env).get(options.api_key_env, "").strip()
    if not value:
        reason = f"no API key for provider 'openai': ${options.api_key_env} is not set"
        raise AuthenticationFailed(options.api_key_env, reason)
    return value


@asynccontextmanager
async def open_provider(
    options: LLMOptions,
    recorder: CallRecorder | None = None,
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> AsyncIterator[LLMProvider]:
    """The configured provider, checked (unless `check=False`), closed on exit."""
    provider = create_provider(options, recorder, env=env)
    try:
        if check:
            await provider.check()
        yield provider
    finally:
        with trio.CancelScope(shield=True):
            await provider.aclose()
