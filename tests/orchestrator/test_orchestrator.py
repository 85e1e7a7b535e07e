"""The orchestrator end to end: a goal in, a verified answer out, every transition an
event; bad goals rejected before anything is appended; a cancel stops a running run.

Real parts throughout: the shipped agents from their entry points, a loopback quote
endpoint, the offline provider in-process and the real openai SDK against the
simulator.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from agents.errors import AgentError, InvalidGoal
from agents.runs._orchestrator import Orchestrator, RunResult
from agents.tools._registry import AgentRegistry
from events import (
    EventStore,
    MemoryEventLog,
    MemoryKeyStore,
    RecordedEvent,
    Sealer,
    open_event_store,
)

from .conftest import (
    TIMEOUT_S,
    QuoteEndpoint,
    first,
    kinds,
    make_orchestrator,
    price_of,
    run_events,
    sim_provider,
    start_simulator,
    step_events,
    submit_plan,
)
from .lab import sleep_step, step

STREAMING = pytest.mark.parametrize("streaming", [False, True], ids=["whole-plan", "streamed-plan"])


def nvda_aapl_answer() -> str:
    return f"Results:\n- NVDA: {price_of('NVDA')} USD\n- AAPL: {price_of('AAPL')} USD"


GOALS = {
    "math": ("what is 17 * 23 + 4", "17 * 23 + 4 = 395"),
    "clock": ("what time is it in Tokyo", "The time in Tokyo (Asia/Tokyo) is "),
    "quotes": ("get the price of NVDA and AAPL", None),
}


async def run_goal(orchestrator: Orchestrator, goal: str, session: str | None = None) -> RunResult:
    with trio.fail_after(TIMEOUT_S):
        return await orchestrator.run_goal(goal, session)


@STREAMING
@pytest.mark.parametrize("name", list(GOALS), ids=list(GOALS))
async def test_goal_completes_with_the_correct_answer(
    name: str,
    streaming: bool,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    goal, expected = GOALS[name]
    orchestrator = make_orchestrator(store, entry_registry, streaming_plan=streaming)
    result = await run_goal(orchestrator, goal)
    assert result.status == "completed", result.reason
    assert result.answer is not None
    assert result.answer.startswith(expected or nvda_aapl_answer())
    if name == "quotes":
        assert quote_endpoint.requests == {"NVDA": 1, "AAPL": 1}


@STREAMING
async def test_the_tools_shown_compactly_plan_the_same_run_for_fewer_prompt_tokens(
    streaming: bool, store: EventStore, entry_registry: AgentRegistry
) -> None:
    """`compact_tool_catalog` (on by default) against the tools as JSON schemas."""
    plans, prompt_tokens, answers = [], [], []
    for compact in (True, False):
        orchestrator = make_orchestrator(
            store, entry_registry, streaming_plan=streaming, compact_tool_catalog=compact
        )
        result = await run_goal(orchestrator, "what is 17 * 23 + 4 and what time is it in Tokyo")
        assert result.status == "completed", result.reason
        records = await run_events(store, result.run_id)
        calls = [r.data for r in records if r.type == "LLMCallCompleted"]
        prompt_tokens.append(next(c["prompt_tokens"] for c in calls if c["purpose"] == "plan"))
        steps = next(r.data["steps"] for r in records if r.type == "PlanCreated")
        plans.append([{k: v for k, v in s.items() if k != "reasoning"} for s in steps])
        answers.append(result.answer)
    assert plans[0] == plans[1]
    assert all("17 * 23 + 4 = 395" in (answer or "") for answer in answers)
    assert prompt_tokens[0] < prompt_tokens[1], prompt_tokens


async def test_whole_plan_run_appends_every_transition_in_order(
    store: EventStore, entry_registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, entry_registry, streaming_plan=False)
    result = await run_goal(orchestrator, "what is 17 * 23 + 4")
    records = await run_events(store, result.run_id)
    assert kinds(records) == [
        "RunRequested",
        "IntentAnalyzed",
        "LLMCallCompleted(plan)",
        "PlanCreated",
        "StepStarted",
        "StepCompleted",
        "LLMCallCompleted(answer)",  # the answer call also verifies the step
        "VerificationCompleted",
        "RunCompleted",
    ]
    data = {r.type: r.data for r in records}
    assert data["IntentAnalyzed"]["intent"] == "calculation"
    assert data["PlanCreated"]["steps"][0] | {"reasoning": ""} == {
        "id": "s1",
        "agent": "math",
        "action": "calculate",
        "parameters": {"expression": "17 * 23 + 4"},
        "dependencies": [],
        "reasoning": "",
    }
    assert data["StepCompleted"]["result"] == {"expression": "17 * 23 + 4", "value": 395}
    assert data["VerificationCompleted"]["passed"] is True
    assert data["RunCompleted"]["answer"] == result.answer
    assert result.llm_calls == 2
    assert {r.correlation for r in records} == {result.run_id}


async def test_streamed_plan_run_keeps_each_steps_events_in_order(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    orchestrator = make_orchestrator(store, entry_registry, streaming_plan=True)
    result = await run_goal(orchestrator, "get the price of NVDA and AAPL then calculate 2 * 3")
    records = await run_events(store, result.run_id)
    assert kinds(records)[:2] == ["RunRequested", "IntentAnalyzed"]
    assert kinds(records)[-1] == "RunCompleted"
    answer = kinds(records).index("LLMCallCompleted(answer)")
    assert kinds(records)[answer + 1 : -1] == ["VerificationCompleted"] * 3
    assert kinds(records).count("PlanCreated") == 1
    assert kinds(records).count("LLMCallCompleted(plan)") == 1
    for step_id in ("s1", "s2", "s3"):
        started = first(records, "StepStarted", step_id)
        assert started < first(records, "StepCompleted", step_id)
        assert first(records, "StepCompleted", step_id) < first(
            records, "VerificationCompleted", step_id
        )
    assert first(records, "StepCompleted", "s1") < first(records, "StepStarted", "s3")
    assert first(records, "StepCompleted", "s2") < first(records, "StepStarted", "s3")


async def test_session_stream_gets_the_question_and_the_answer(
    store: EventStore, entry_registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, entry_registry)
    result = await run_goal(orchestrator, "  what is 17 * 23 + 4  ")
    session = await store.read_stream(f"session-{result.session_id}")
    assert [r.type for r in session] == [
        "SessionStarted",
        "UserMessageReceived",
        "AssistantMessageSent",
        "ContextUpdated",  # what the run established, for the session's next plans
    ]
    assert session[3].data["values"]["tools"] == ["math.calculate"]
    assert session[1].data["text"] == "what is 17 * 23 + 4"
    assert session[1].data["message_id"] == result.run_id
    assert session[2].data == {
        "session_id": result.session_id,
        "text": result.answer,
        "run_id": result.run_id,
    }


async def test_follow_up_goal_in_a_session_uses_the_earlier_messages(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    orchestrator = make_orchestrator(store, entry_registry)
    earlier = await run_goal(orchestrator, "get the price of NVDA")
    later = await run_goal(orchestrator, "and what is the price now?", earlier.session_id)
    assert later.status == "completed", later.reason
    assert later.session_id == earlier.session_id
    assert quote_endpoint.requests == {"NVDA": 2}
    session = await store.read_stream(f"session-{earlier.session_id}")
    assert [r.type for r in session].count("SessionStarted") == 1
    assert [r.type for r in session].count("AssistantMessageSent") == 2


async def test_same_action_quote_steps_are_fetched_in_one_request(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    orchestrator = make_orchestrator(store, entry_registry, streaming_plan=False)
    result = await run_goal(orchestrator, "get the price of NVDA and AAPL")
    assert result.answer == nvda_aapl_answer()
    assert quote_endpoint.batches == [("AAPL", "NVDA")]
    records = await run_events(store, result.run_id)
    assert step_events(records) == {
        "s1": ["StepStarted", "StepCompleted"],
        "s2": ["StepStarted", "StepCompleted"],
    }
    prices = {
        r.data["step_id"]: r.data["result"]["symbol"] for r in records if r.type == "StepCompleted"
    }
    assert prices == {"s1": "NVDA", "s2": "AAPL"}


@STREAMING
async def test_goal_completes_through_the_openai_sdk_against_the_simulator(
    streaming: bool,
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    simulator, url = await start_simulator(nursery)
    provider = sim_provider(url, store)
    orchestrator = make_orchestrator(store, entry_registry, provider, streaming_plan=streaming)
    result = await run_goal(orchestrator, "get the price of NVDA and AAPL then calculate 2 * 3")
    await provider.aclose()
    assert result.status == "completed", result.reason
    assert result.answer is not None and "2 * 3 = 6" in result.answer
    assert f"NVDA: {price_of('NVDA')} USD" in result.answer
    purposes = simulator.statistics().by_purpose
    assert purposes["plan"] == purposes["answer"] == 1
    assert "verify" not in purposes  # the answer call verified the steps
    records = await run_events(store, result.run_id)
    assert kinds(records).count("VerificationCompleted") == 3


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ("", "the goal must be non-empty text"),
        ("  \n\t ", "the goal must be non-empty text"),
        ("x" * 41, "the goal is 41 characters, over the limit of 40"),
        (42, "the goal must be non-empty text"),
        (None, "the goal must be non-empty text"),
        (b"what is 2 + 2", "the goal must be non-empty text"),
        (["what is 2 + 2"], "the goal must be non-empty text"),
    ],
    ids=["empty", "blank", "too-long", "number", "none", "bytes", "list"],
)
async def test_bad_goal_is_rejected_and_nothing_is_appended(
    goal: Any, message: str, store: EventStore, entry_registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, entry_registry, max_goal_chars=40)
    with pytest.raises(InvalidGoal) as caught:
        await orchestrator.run_goal(goal)
    assert str(caught.value) == message
    assert store.head_position == 0
    assert await store.read(0) == []


async def test_goal_at_the_size_limit_is_accepted(
    store: EventStore, entry_registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, entry_registry, max_goal_chars=19)
    assert (await run_goal(orchestrator, "what is 17 * 23 + 4")).status == "completed"


async def wait_for_step_start(store: EventStore, run_id: str, step_id: str) -> RecordedEvent:
    async for record in store.subscribe(stream=f"run-{run_id}"):
        if record.type == "StepStarted" and record.data["step_id"] == step_id:
            return record
    raise AssertionError("the subscription ended")


async def test_cancel_of_a_running_run_stops_it_and_appends_run_cancelled(
    store: EventStore, registry: AgentRegistry, probe: Any
) -> None:
    orchestrator = make_orchestrator(store, registry)
    run_id = await submit_plan(
        store, [sleep_step("long", 3600), sleep_step("after", 0, ["long"]), step("h", "hang")]
    )
    results: list[RunResult] = []
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:

            async def execute() -> None:
                results.append(await orchestrator.execute(run_id))

            nursery.start_soon(execute)
            await wait_for_step_start(store, run_id, "long")
            assert orchestrator.running() == [run_id]
            assert orchestrator.cancel(run_id) is True
    assert results[0].status == "cancelled"
    assert orchestrator.running() == []
    assert orchestrator.cancel(run_id) is False
    records = await run_events(store, run_id)
    assert records[-1].type == "RunCancelled"
    assert records[-1].data["reason"] == "cancelled by request"
    assert not {"StepCompleted", "RunCompleted", "RunFailed"} & {r.type for r in records}
    assert "after" not in probe.times("start")
    assert (await orchestrator.unfinished_runs()) == []


async def test_cancel_of_a_run_not_running_here_returns_false(
    store: EventStore, registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, registry)
    assert orchestrator.cancel("no-such-run") is False
    run_id = await submit_plan(store, [sleep_step("s", 0)])
    assert orchestrator.cancel(run_id) is False  # submitted, but not executing
    assert [r.type for r in await run_events(store, run_id)] == ["RunRequested", "PlanCreated"]


async def test_cancel_arriving_as_the_run_completes_does_not_add_a_second_terminal_event(
    store: EventStore, registry: AgentRegistry
) -> None:
    # A cancel racing the end of a run: once RunCompleted is in the log the run is
    # finished; RunCancelled after it would give the run two outcomes.
    orchestrator = make_orchestrator(store, registry)
    for _ in range(4):
        run_id = await submit_plan(store, [sleep_step("quick", 0)])
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:

                async def cancel_on_completion(run_id: str = run_id) -> None:
                    async for record in store.subscribe(stream=f"run-{run_id}"):
                        if record.type == "RunCompleted":
                            orchestrator.cancel(run_id)
                            return

                nursery.start_soon(cancel_on_completion)
                await orchestrator.execute(run_id)
        records = await run_events(store, run_id)
        terminal = [r.type for r in records if r.type in ("RunCompleted", "RunCancelled")]
        assert terminal == ["RunCompleted"]
        session = await store.read_stream("session-lab-session")
        replies = [r for r in session if r.type == "AssistantMessageSent"]
        assert replies[-1].data["run_id"] == run_id  # the answer reached the session


async def test_executing_a_run_already_executing_here_is_refused(
    store: EventStore, registry: AgentRegistry, probe: Any
) -> None:
    orchestrator = make_orchestrator(store, registry)
    run_id = await submit_plan(store, [step("t", "touch", label="t"), sleep_step("s", 0.3, ["t"])])
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(orchestrator.execute, run_id)
            await wait_for_step_start(store, run_id, "s")
            with pytest.raises(AgentError):
                await orchestrator.execute(run_id, resume=True)
    records = await run_events(store, run_id)
    assert [r.type for r in records].count("RunCompleted") == 1
    assert step_events(records)["s"] == ["StepStarted", "StepCompleted"]
    assert probe.effect_count("t") == 1


async def test_run_where_no_step_completes_fails_with_each_steps_reason(
    store: EventStore, registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, registry)
    steps = [step("bad", "fail", message="the disk is on fire"), sleep_step("child", 0, ["bad"])]
    run_id = await submit_plan(store, steps)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.execute(run_id)
    assert result.status == "failed"
    assert result.reason == (
        "no step completed (bad: the disk is on fire; child: dependency bad did not complete)"
    )
    records = await run_events(store, run_id)
    assert records[-1].type == "RunFailed" and records[-1].data["reason"] == result.reason
    assert "LLMCallCompleted(answer)" not in kinds(records)


async def test_answer_says_plainly_which_steps_failed(
    store: EventStore, registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, registry)
    steps = [step("ok", "echo", value="fine"), step("bad", "fail", message="the disk is on fire")]
    run_id = await submit_plan(store, steps)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.execute(run_id)
    assert result.status == "completed"
    assert result.answer is not None
    assert "lab.fail failed: failed: the disk is on fire" in result.answer


async def test_a_new_session_s_first_message_is_sealed_under_its_owner(
    registry: AgentRegistry,
) -> None:
    """The message is sealed with the session's key, which is made for the owner the
    log names: so `SessionStarted` is on disk before the message is sealed, and
    forgetting the owner forgets the message (a queued `SessionStarted` once let the key
    be made for no one)."""
    keys = MemoryKeyStore()
    sealer = Sealer(keys)
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(log=MemoryEventLog(), sealer=sealer) as sealed:
            orchestrator = make_orchestrator(sealed, registry)
            submitted = await orchestrator.submit("tell me about my secret plan", principal="ana")
            assert sealer.forget_principal("ana") is not None
            records = await sealed.read_stream(f"session-{submitted.session_id}")
            (message,) = [r for r in await sealed.open(records) if r.type == "UserMessageReceived"]
    assert message.data.get("forgotten") is True
    assert "secret plan" not in str(message.data)


async def test_the_planner_sees_a_sealed_sessions_messages_opened(
    registry: AgentRegistry,
) -> None:
    """The history a plan is asked with is read in one go from the session's end and
    opened there: the earlier message in clear, though the log holds it sealed."""
    sealer = Sealer(MemoryKeyStore())
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(log=MemoryEventLog(), sealer=sealer) as sealed:
            orchestrator = make_orchestrator(sealed, registry)
            first = await orchestrator.submit("tell me about my secret plan", principal="ana")
            await orchestrator.submit("and what else", first.session_id, principal="ana")
            history = await orchestrator._history_from_log(first.session_id)
            raw = await sealed.read_stream(f"session-{first.session_id}")
    assert history == [{"role": "user", "text": "tell me about my secret plan"}]
    assert "secret plan" not in str([r.data for r in raw])
