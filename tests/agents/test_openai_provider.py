"""OpenAIProvider against the simulator: bad settings fail clearly, faults are survived.

Each wrong setting (key, base_url, model) must fail with one error naming the setting,
at start-up where possible. Under injected faults every call either succeeds after
retries or fails with a typed error, and the `LLMCallCompleted` events say which.
"""

from __future__ import annotations

import contextlib
import re
import socket

import pytest
import trio

from agents import (
    AuthenticationFailed,
    CallRecorder,
    LLMError,
    LLMOptions,
    OfflineProvider,
    OpenAIProvider,
    PromptRepository,
    ProviderUnavailable,
    RetriesExhausted,
    UnknownModel,
    UnknownProvider,
    open_provider,
    plan_messages,
)
from agents.errors import LLMTimeout
from events import EventStore

from .conftest import (
    SIM_KEY,
    SIM_KEY_ENV,
    TIMEOUT_S,
    TOOLS,
    llm_events,
    sim_llm_options,
    start_simulator,
)

PLAN = plan_messages(PromptRepository(), "what time is it in Tokyo", TOOLS)
ENV = {SIM_KEY_ENV: SIM_KEY}


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_missing_key_variable_fails_at_start_naming_it() -> None:
    options = LLMOptions(provider="openai", api_key_env="AUTOAGENT_TEST_NO_SUCH_KEY")
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(AuthenticationFailed) as raised:
            async with open_provider(options, env={}):
                pass
    message = str(raised.value)
    assert "$AUTOAGENT_TEST_NO_SUCH_KEY is not set" in message
    assert "llm.api_key_env" in message


async def test_wrong_key_fails_at_start_naming_the_setting(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, api_key=SIM_KEY)
        with pytest.raises(AuthenticationFailed) as raised:
            async with open_provider(sim_llm_options(url), env={SIM_KEY_ENV: "sk-wrong-key-000"}):
                pass
    assert "refused the API key (401" in str(raised.value)
    assert f"${SIM_KEY_ENV}, set by llm.api_key_env" in str(raised.value)


async def test_wrong_key_mid_run_is_not_retried(nursery: trio.Nursery, store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, api_key=SIM_KEY)
        provider = OpenAIProvider(sim_llm_options(url), "sk-wrong-key-000", CallRecorder(store))
        async with contextlib.aclosing(provider):
            with pytest.raises(AuthenticationFailed):
                await provider.chat_json(PLAN, purpose="plan", run_id="r")
        events = await llm_events(store)
    assert [(e.outcome, e.retries) for _, e in events] == [("AuthenticationFailed", 0)]


async def test_unreachable_base_url_fails_at_start_naming_it() -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(ProviderUnavailable) as raised:
            async with open_provider(sim_llm_options(url), env=ENV):
                pass
    assert f"cannot reach the LLM endpoint {url} (llm.base_url)" in str(raised.value)


async def test_unreachable_base_url_mid_run_retries_then_says_so(store: EventStore) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    provider = OpenAIProvider(sim_llm_options(url, max_retries=2), SIM_KEY, CallRecorder(store))
    with trio.fail_after(TIMEOUT_S):
        async with contextlib.aclosing(provider):
            with pytest.raises(RetriesExhausted) as raised:
                await provider.chat_json(PLAN, purpose="plan")
        events = await llm_events(store)
    assert isinstance(raised.value.last_error, ProviderUnavailable)
    assert "llm.base_url" in str(raised.value)
    assert [(e.outcome, e.retries) for _, e in events] == [("RetriesExhausted", 2)]


async def test_unknown_model_fails_at_start_naming_it(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        with pytest.raises(UnknownModel) as raised:
            async with open_provider(sim_llm_options(url, model="gpt-nope"), env=ENV):
                pass
    assert "does not serve model 'gpt-nope' (llm.model)" in str(raised.value)


async def test_unknown_model_mid_run_is_the_same_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        provider = OpenAIProvider(sim_llm_options(url, model="gpt-nope"), SIM_KEY)
        async with contextlib.aclosing(provider):
            with pytest.raises(UnknownModel):
                await provider.chat_json(PLAN, purpose="plan")


async def test_unknown_provider_is_named() -> None:
    with pytest.raises(
        UnknownProvider, match=re.escape("unknown LLM provider 'anthropic' (llm.provider)")
    ):
        async with open_provider(LLMOptions(provider="anthropic")):
            pass


async def test_a_slow_response_times_out_and_is_retried(
    nursery: trio.Nursery, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, fault_rate=1.0, faults=("slow",), slow_response_s=3)
        options = sim_llm_options(url, timeout_s=0.1, max_retries=1)
        provider = OpenAIProvider(options, SIM_KEY, CallRecorder(store))
        async with contextlib.aclosing(provider):
            with pytest.raises(RetriesExhausted) as raised:
                await provider.chat_json(PLAN, purpose="plan")
    assert isinstance(raised.value.last_error, LLMTimeout)
    assert "llm.timeout_s" in str(raised.value)


async def test_simulator_rate_limit_is_survived_and_counted(
    nursery: trio.Nursery, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        simulator, url = await start_simulator(nursery, rpm_limit=600, burst_s=0.01)
        # our budget claims more than the server allows: its 429s must slow us down
        # Enough retries that a busy machine (slow retries bunching up) cannot exhaust them.
        options = sim_llm_options(url, rpm_limit=60_000, max_parallel_calls=4, max_retries=10)
        provider = OpenAIProvider(options, SIM_KEY, CallRecorder(store))
        async with contextlib.aclosing(provider):
            async with trio.open_nursery() as calls:
                for _ in range(8):
                    calls.start_soon(lambda: provider.chat_json(PLAN, purpose="plan"))
        events = await llm_events(store)
    assert [e.outcome for _, e in events] == ["ok"] * 8
    assert sum(e.retries for _, e in events) == simulator.statistics().rate_limited > 0
    assert provider.limiter.statistics().rate_limited > 0


async def test_a_batch_under_faults_succeeds_or_fails_typed_and_events_say_which(
    nursery: trio.Nursery, store: EventStore
) -> None:
    """Half the calls may retry 4 times, half not at all (so some surely fail)."""
    outcomes: dict[str, str] = {}
    with trio.fail_after(TIMEOUT_S * 2):
        simulator, url = await start_simulator(
            nursery, fault_rate=0.2, seed=42, slow_response_s=2.0, retry_after_s=0.02
        )
        recorder = CallRecorder(store)
        patient = OpenAIProvider(sim_llm_options(url, timeout_s=0.3), SIM_KEY, recorder)
        hasty = OpenAIProvider(
            sim_llm_options(url, timeout_s=0.3, max_retries=0), SIM_KEY, recorder
        )

        async def one(provider: OpenAIProvider, run_id: str) -> None:
            try:
                await provider.chat_json(PLAN, purpose="plan", run_id=run_id)
                outcomes[run_id] = "ok"
            except LLMError as exc:
                outcomes[run_id] = type(exc).__name__

        async with contextlib.aclosing(patient), contextlib.aclosing(hasty):
            async with trio.open_nursery() as batch:
                for index in range(30):
                    batch.start_soon(one, patient, f"patient{index}")
                    batch.start_soon(one, hasty, f"hasty{index}")
        events = await llm_events(store)
    recorded = {stream.removeprefix("run-"): event for stream, event in events}
    assert len(events) == 60 and {run: e.outcome for run, e in recorded.items()} == outcomes
    assert set(outcomes.values()) <= TYPED_OUTCOMES
    assert any(e.outcome == "ok" and e.retries > 0 for e in recorded.values())
    assert any(o != "ok" for run, o in outcomes.items() if run.startswith("hasty"))
    assert set(simulator.statistics().faults) == {"429", "500", "slow", "bad_json"}


TYPED_OUTCOMES = {
    "ok",
    "RetriesExhausted",
    "RateLimited",
    "ProviderError",
    "LLMTimeout",
    "InvalidModelOutput",
    "ProviderUnavailable",
}


async def test_a_stream_cut_short_raises_typed_and_is_recorded(
    nursery: trio.Nursery, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, fault_rate=1.0, faults=("bad_json",))
        provider = OpenAIProvider(sim_llm_options(url), SIM_KEY, CallRecorder(store))
        async with contextlib.aclosing(provider):
            with pytest.raises(ProviderUnavailable):
                async with provider.stream_chat(PLAN, purpose="plan", run_id="cut") as stream:
                    async for _ in stream:
                        pass
        events = await llm_events(store)
    assert [(s, e.outcome) for s, e in events] == [("run-cut", "ProviderUnavailable")]


async def test_both_providers_give_the_same_answer_and_usage(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        remote = OpenAIProvider(sim_llm_options(url), SIM_KEY)
        async with contextlib.aclosing(remote):
            over_http = await remote.chat_json(PLAN, purpose="plan")
        in_process = await OfflineProvider().chat_json(PLAN, purpose="plan")
    assert over_http.data == in_process.data
    assert over_http.usage == in_process.usage
