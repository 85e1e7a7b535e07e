"""An identical memory of the same user is stored once: remembering it again appends
nothing and says it was already known; another user, other words, or a forgotten
memory are stored as new."""

from __future__ import annotations

import trio

from agents.offline import _model as offline_model

from .conftest import TIMEOUT_S, Lab

FACT = "my dentist is Dr. Lee"


async def memory_records(lab: Lab, user: str) -> list[str]:
    return [r.type for r in await lab.store.read_stream(f"memory-{user}")]


async def test_the_same_text_again_is_already_known_and_not_stored(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        first = await lab.call("remember", text=FACT, user="alice")
        again = await lab.call("remember", text=FACT, user="alice")
        records = await memory_records(lab, "alice")
    assert "already_known" not in first
    assert again == {**first, "already_known": True}
    assert records == ["MemoryAdded"]


async def test_other_words_or_another_user_are_new_memories(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        await lab.call("remember", text=FACT, user="alice")
        near = await lab.call("remember", text="my dentist is dr. lee", user="alice")
        other = await lab.call("remember", text=FACT, user="bob")
        records = await memory_records(lab, "alice")
    assert "already_known" not in near and "already_known" not in other
    assert records == ["MemoryAdded", "MemoryAdded"]


async def test_a_forgotten_memory_can_be_remembered_again(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        first = await lab.call("remember", text=FACT, user="alice")
        await lab.call("forget", memory_id=first["memory_id"], user="alice")
        again = await lab.call("remember", text=FACT, user="alice")
    assert "already_known" not in again and again["memory_id"] != first["memory_id"]


async def test_a_batch_stores_a_repeated_text_once(lab: Lab) -> None:
    tool = lab.agent.tools()["remember"]
    with trio.fail_after(TIMEOUT_S):
        results = await tool.call_batch(
            [{"text": FACT, "user": "alice"}, {"text": FACT, "user": "alice"}]
        )
        records = await memory_records(lab, "alice")
    assert records == ["MemoryAdded"]
    assert results[1] == {**results[0], "already_known": True}


def test_the_offline_answer_says_it_was_already_known() -> None:
    goal = f"remember that {FACT}"
    result = {"user": "anonymous", "memory_id": "ab" * 16, "position": 3, "already_known": True}
    item = {"id": "s1", "agent": "memory", "action": "remember", "result": result}
    assert offline_model.answer(goal, [item])["answer"] == f"Already known: {FACT}."
