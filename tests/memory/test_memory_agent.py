"""The `memory` agent's tools end to end: a real LMDB store, the file key store, the
`memory` projection followed live by a runner, and the agent built from its context."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from agents.errors import InvalidParameters, ToolError
from agents.tools import AgentContext
from agents.tools._memory import MemoryAccess, MemoryAgent
from agents.tools._registry import AgentRegistry, discover_agents
from projections import MemoryKeyStore

from .conftest import TIMEOUT_S, HashEmbedder, Lab, open_lab

FACTS = {
    "sister": "my sister lives in lisbon with two cats",
    "report": "the quarterly report is due on friday",
    "car": "the car needs new tyres before winter",
}


async def remember_facts(lab: Lab, user: str = "alice") -> dict[str, str]:
    ids = {}
    for name, text in FACTS.items():
        result = await lab.call("remember", content=text, user=user)
        ids[name] = result["memory_id"]
    return ids


async def test_remember_then_recall_finds_it_by_meaning(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        ids = await remember_facts(lab)
        result = await lab.call(
            "recall", query="where in lisbon does my sister live", user="alice", k=2
        )
        assert result["user"] == "alice"
        first = result["memories"][0]
        assert (first["memory_id"], first["content"]) == (ids["sister"], FACTS["sister"])
        assert len(result["memories"]) == 2
        assert result["memories"][0]["score"] >= result["memories"][1]["score"]


async def test_remember_appends_only_sealed_content(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await lab.call("remember", content=FACTS["car"])
        assert result["user"] == "anonymous"
        (record,) = await lab.store.read_stream("memory-anonymous")
        assert record.position == result["position"]
        assert record.data["content"] == "" and record.data["embedding"] == b""
        assert b"tyres" not in record.data["sealed_content"]
        assert record.data["model"] == "test-hash" and record.data["key_id"]


async def test_recall_sees_the_agents_own_writes_at_once(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        for i in range(5):
            text = f"note number {i} about topic{i}"
            await lab.call("remember", content=text, user="bob")
            result = await lab.call("recall", query=f"topic{i}", user="bob", k=1)
            assert [m["content"] for m in result["memories"]] == [text]


async def test_recall_sees_another_agents_write_while_the_projections_linger(
    data_dir: Path,
) -> None:
    """Another run's (another agent's) `remember` a moment ago is found: a recall waits
    for what the log holds, not only for its own agent's writes, even while the
    projections would wait an hour before applying a commit nobody waits for."""
    with trio.fail_after(TIMEOUT_S):
        async with open_lab(data_dir, linger_s=3600.0) as lab:
            access = MemoryAccess(lab.keys, lab.embedder, lab.projection, lab.runner.wait_for)
            other = MemoryAgent(AgentContext(store=lab.store, memory=access))
            await lab.call("remember", content="the gate code is 4417", user="bob")
            result = await other.tools()["recall"].call({"query": "gate code", "user": "bob"})
    assert [m["content"] for m in result["memories"]] == ["the gate code is 4417"]


async def test_forget_removes_one_memory_and_is_not_idempotent(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        ids = await remember_facts(lab)
        result = await lab.call("forget", memory_id=ids["report"], user="alice")
        assert result == {"user": "alice", "memory_id": ids["report"], "forgotten": True}
        recalled = await lab.call("recall", query="quarterly report friday", user="alice", k=5)
        assert ids["report"] not in [m["memory_id"] for m in recalled["memories"]]
        assert len(recalled["memories"]) == 2
        with pytest.raises(ToolError, match=f"user 'alice' has no memory '{ids['report']}'"):
            await lab.call("forget", memory_id=ids["report"], user="alice")


async def test_forget_all_destroys_the_key_and_memories_stay_gone(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        await remember_facts(lab)
        await lab.call("remember", content=FACTS["car"], user="bob")
        result = await lab.call("forget_all", user="alice")
        assert result == {"user": "alice", "key_destroyed": True, "forgotten": 3}
        assert lab.keys.current("alice") is None
        recalled = await lab.call("recall", query=FACTS["sister"], user="alice")
        assert recalled["memories"] == []
        again = await lab.call("forget_all", user="alice")
        assert again == {"user": "alice", "key_destroyed": False, "forgotten": 0}
        # A new memory gets a new key; nothing sealed with the old one comes back.
        await lab.call("remember", content="a fresh start in porto", user="alice")
        recalled = await lab.call("recall", query=FACTS["sister"], user="alice", k=5)
        assert [m["content"] for m in recalled["memories"]] == ["a fresh start in porto"]
        bob = await lab.call("recall", query=FACTS["car"], user="bob", k=1)
        assert [m["content"] for m in bob["memories"]] == [FACTS["car"]]
        (destroyed,) = [
            r for r in await lab.store.read_stream("memory-alice") if r.type == "MemoryKeyDestroyed"
        ]
        assert destroyed.data["user"] == "alice"


async def test_a_batch_of_remembers_is_embedded_in_one_call(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        tool = lab.agent.tools()["remember"]
        assert isinstance(lab.embedder, HashEmbedder)
        calls = lab.embedder.calls
        results = await tool.call_batch(
            [
                {"content": FACTS["sister"], "user": "alice"},
                {"content": "   "},
                {"content": FACTS["car"], "user": "bob"},
                {"content": FACTS["report"], "user": "alice"},
            ]
        )
        assert lab.embedder.calls == calls + 1
        assert isinstance(results[1], InvalidParameters)
        assert [r["user"] for r in (results[0], results[2], results[3])] == [
            "alice",
            "bob",
            "alice",
        ]
        recalled = await lab.call("recall", query="quarterly report", user="alice", k=1)
        assert recalled["memories"][0]["memory_id"] == results[3]["memory_id"]


@pytest.mark.parametrize(
    ("action", "parameters", "message"),
    [
        pytest.param("remember", {}, "give 'content' \\(or 'text'\\)", id="no-content"),
        pytest.param("remember", {"text": 3}, "'text' should be string", id="text-int"),
        pytest.param("remember", {"content": " "}, "'content' must not be empty", id="blank"),
        pytest.param("remember", {"content": "x" * 20_001}, "over 20000", id="too-long"),
        pytest.param("remember", {"content": "x", "user": ""}, "non-empty name", id="no-user"),
        pytest.param("remember", {"content": "x", "colour": 1}, "unknown parameter", id="extra"),
        pytest.param("recall", {"query": "x", "k": 0}, "between 1 and 50, got 0", id="k-0"),
        pytest.param("recall", {"query": "x", "k": 51}, "between 1 and 50, got 51", id="k-51"),
        pytest.param("recall", {"query": "x", "k": "3"}, "'k' should be integer", id="k-str"),
        pytest.param("forget", {"user": "alice"}, "missing parameter 'memory_id'", id="no-id"),
        pytest.param("forget_all", {}, "missing parameter 'user'", id="no-user-all"),
        pytest.param("forget_all", {"user": " "}, "non-empty name", id="blank-user-all"),
    ],
)
async def test_bad_parameters_are_refused_with_a_clear_message(
    lab: Lab, action: str, parameters: dict[str, object], message: str
) -> None:
    with trio.fail_after(TIMEOUT_S), pytest.raises(InvalidParameters, match=message):
        await lab.agent.tools()[action].call(parameters)


async def test_structured_content_is_remembered_as_json_and_text_as_is(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        await lab.call("remember", content={"expression": "17*23", "result": 391})
        await lab.call("remember", text="the result of the sum was small")
        result = await lab.call("recall", query="expression result 391 17*23", k=2)
        contents = [m["content"] for m in result["memories"]]
        assert contents[0] == '{"expression": "17*23", "result": 391}'
        assert contents[1] == "the result of the sum was small"


async def test_recall_without_the_servers_index_says_so(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        access = MemoryAccess(MemoryKeyStore(), HashEmbedder())
        agent = MemoryAgent(AgentContext(memory=access))
        with pytest.raises(ToolError, match="no key store or event log"):
            await agent.tools()["remember"].call({"content": "x"})
        with pytest.raises(ToolError, match="memory is not available"):
            await MemoryAgent(AgentContext()).tools()["recall"].call({"query": "x"})


def test_the_agent_is_registered_and_declares_its_tools() -> None:
    assert discover_agents(["memory"]) == {"memory": MemoryAgent}
    catalog = AgentRegistry({"memory": MemoryAgent}).catalog()
    specs = {spec.action: spec for spec in MemoryAgent.tool_specs()}
    assert {name: s.idempotent for name, s in specs.items()} == {
        "remember": False,
        "recall": True,
        "forget": False,
        "forget_all": False,
    }
    assert specs["remember"].batchable and catalog.get("memory.recall") is not None
