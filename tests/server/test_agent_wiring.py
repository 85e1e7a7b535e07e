"""Configuration reaches the agents: settings in the context, features in the options."""

from __future__ import annotations

from server.app import agent_context, orchestrator_options
from server.config import load_config


def test_web_allowlist_and_quote_endpoint_reach_the_agent_context() -> None:
    env = {
        "AUTOAGENT_AGENTS__WEB_ALLOW": '["127.0.0.1", "10.0.0.0/8"]',
        "AUTOAGENT_AGENTS__QUOTE_ENDPOINT": "http://127.0.0.1:9/quotes",
    }
    context = agent_context(load_config(env=env), store=None, http=None, llm=None)  # type: ignore[arg-type]
    assert context.settings.web_allow == ("127.0.0.1", "10.0.0.0/8")
    assert context.settings.quote_endpoint == "http://127.0.0.1:9/quotes"


def test_all_features_off_is_the_sequential_baseline() -> None:
    env = {
        f"AUTOAGENT_FEATURES__{name}": "false"
        for name in (
            "PARALLEL_EXECUTION",
            "ASYNC_PLANNER",
            "BACKGROUND_VERIFICATION",
            "STEP_BATCHING",
            "STREAMING_PLAN",
            "BATCH_EMBEDDINGS",
        )
    }
    options = orchestrator_options(load_config(env=env))
    assert not (options.parallel_execution or options.async_planner or options.step_batching)
    assert not (options.background_verification or options.streaming_plan)
    env["AUTOAGENT_AGENTS__REQUIRE_APPROVAL"] = '["email.send"]'
    assert orchestrator_options(load_config(env=env)).approval_tools == ("email.send",)
