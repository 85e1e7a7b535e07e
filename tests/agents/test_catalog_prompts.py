"""The caches of issue 4 item 6: prompt templates through an LRU, catalogs by content hash."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from pathlib import Path

import pytest

from agents import (
    PromptRepository,
    PromptUnreadable,
    ToolCatalogCache,
    ToolSpec,
    UnknownPrompt,
    catalog_hash,
    plan_messages,
)
from agents.llm._prompting import template_names

from .conftest import TOOLS

_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "agents" / "prompts"


def test_catalog_hash_ignores_order_but_not_content() -> None:
    changed = dataclasses.replace(TOOLS[0], description="Get a stock quote.")
    assert catalog_hash(TOOLS) == catalog_hash(TOOLS[::-1])
    assert catalog_hash(TOOLS) != catalog_hash((changed, *TOOLS[1:]))


def test_catalog_cache_hits_for_the_same_tools_and_misses_for_a_changed_one() -> None:
    cache = ToolCatalogCache(maxsize=4)
    first = cache.get(TOOLS)
    assert cache.get(list(reversed(TOOLS))) is first
    changed = dataclasses.replace(TOOLS[2], keywords=("math",))
    second = cache.get((*TOOLS[:2], changed, *TOOLS[3:]))
    assert second is not first and second.get("math.calculate") == changed
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.size) == (1, 2, 2)


def test_catalog_cache_evicts_the_least_recently_used() -> None:
    cache = ToolCatalogCache(maxsize=2)
    a, b, c = ((tool,) for tool in TOOLS[:3])
    cache.get(a), cache.get(b), cache.get(a), cache.get(c)
    cache.get(a)
    assert cache.statistics().misses == 3  # b was evicted, a stayed


def test_tool_specs_are_hashable_despite_their_schema_dict() -> None:
    assert len({*TOOLS, *(ToolSpec.from_dict(t.to_dict()) for t in TOOLS)}) == len(TOOLS)


def test_tool_spec_round_trips_through_its_dict() -> None:
    for spec in TOOLS:
        assert ToolSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_prompts_are_read_once_and_then_served_from_the_cache() -> None:
    prompts = PromptRepository(maxsize=8)
    for _ in range(5):
        assert "verify" in prompts.render("verify")
    stats = prompts.statistics()
    assert (stats.misses, stats.hits, stats.size) == (1, 4, 1)


def test_prompt_cache_of_size_zero_reads_every_time() -> None:
    prompts = PromptRepository(maxsize=0)
    prompts.get("verify"), prompts.get("verify")
    assert prompts.statistics().misses == 2


@pytest.mark.parametrize("name", ["nope", "../plan"], ids=["missing", "path"])
def test_unknown_prompt_is_named(name: str) -> None:
    with pytest.raises(UnknownPrompt, match="no prompt template named"):
        PromptRepository().get(name)


@pytest.mark.parametrize("task", ["verify", "answer", "intent", "step", "chat"])
def test_every_task_has_a_prompt(task: str) -> None:
    assert PromptRepository().render(task).strip()


def test_the_plan_prompt_explains_the_form_its_tools_are_shown_in() -> None:
    compact, schema = (
        plan_messages(PromptRepository(), "price of NVDA", TOOLS, compact_tools=form)[0]
        for form in (True, False)
    )
    assert '"tool" ("<agent>.<action>":' in compact["content"]
    assert "a JSON schema with" in schema["content"]
    assert '"tool" ("<agent>.<action>":' not in schema["content"]
    with pytest.raises(KeyError, match="tools_explained"):
        PromptRepository().render("plan")  # the plan template needs to be told the form


def test_with_the_newer_options_off_the_plan_prompt_asks_for_steps_as_before() -> None:
    """compact_steps and with_intent off: the steps' full form, nothing about "also" or
    "step_form", and nothing left where their text would go."""
    system, user = plan_messages(
        PromptRepository(), "x", TOOLS, compact_steps=False, with_intent=False
    )
    text = system["content"]
    assert '"reasoning": "<one short sentence>"}]}\nRules:' in text
    assert '"agent": "...", "action": "..."' in text and '"step_form"' not in text
    assert '"also"' not in text and 'then list that id in "dependencies"' in text
    assert not {"also", "step_form"} & set(json.loads(user["content"]))


def test_plan_request_is_a_system_prompt_and_a_json_document() -> None:
    system, user = plan_messages(PromptRepository(), "price of NVDA", TOOLS, ["earlier goal"])
    assert system["role"] == "system" and '"$${s1}"' not in system["content"]
    assert '"${s1}"' in system["content"]
    document = json.loads(user["content"])
    assert (document["task"], document["goal"], document["history"]) == (
        "plan",
        "price of NVDA",
        ["earlier goal"],
    )
    assert [t["tool"] for t in document["tools"]] == [t.name for t in TOOLS]


def test_the_planner_is_shown_what_it_plans_with_and_not_what_only_the_executor_uses() -> None:
    spec = ToolSpec(
        "memory",
        "remember",
        "Remember a fact.",
        {"type": "object", "properties": {"text": {"type": "string"}, "user": {}}},
        idempotent=False,
        batchable=True,
        batch_action="remember_many",
        keywords=("remember",),
        requires_approval=True,
        acts_for="user",
    )
    catalog = ToolCatalogCache().get([spec])
    for tools in (catalog, [spec]):
        _, user = plan_messages(PromptRepository(), "remember that x", tools)
        (shown,) = json.loads(user["content"])["tools"]
        assert shown == {
            "tool": "memory.remember",
            "description": "Remember a fact.",
            "parameters": {"text?": "string", "user?": "any"},
            "keywords": "remember",
            "acts_for": "user",
        }
        _, user = plan_messages(PromptRepository(), "remember that x", tools, compact_tools=False)
        (shown,) = json.loads(user["content"])["tools"]
        assert shown == {
            "agent": "memory",
            "action": "remember",
            "description": "Remember a fact.",
            "parameters": spec.to_dict()["parameters"],
            "keywords": ["remember"],
            "acts_for": "user",
        }
        # "acts_for" is explained when a tool shown has it, in either form
        for form in (True, False):
            with_key, _ = plan_messages(PromptRepository(), "x", tools, compact_tools=form)
            without, _ = plan_messages(PromptRepository(), "x", TOOLS, compact_tools=form)
            assert '"acts_for" names a parameter' in with_key["content"]
            assert "acts_for" not in without["content"]
    # What the executor acts on still tells catalogs apart (the hash is of the whole spec).
    assert catalog_hash([spec]) != catalog_hash([dataclasses.replace(spec, idempotent=True)])


def test_load_reads_every_template_so_no_request_reads_a_file() -> None:
    prompts = PromptRepository()
    prompts.load()
    read = prompts.statistics().misses
    assert read == len(list(_PROMPTS_DIR.glob("*.txt")))
    for form in (True, False):
        plan_messages(prompts, "price of NVDA", TOOLS, compact_tools=form, with_intent=form)
        plan_messages(prompts, "x", [dataclasses.replace(TOOLS[0], acts_for="user")])
    for task in ("verify", "verify_batch", "answer", "intent", "step", "chat", "report"):
        prompts.render(task)
    assert prompts.statistics().misses == read
    assert prompts.statistics().hits > 0


def test_a_template_that_is_not_text_is_named_and_odd_files_are_not_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompts folder of a broken install: a file that is not UTF-8 is refused with
    a named error (not a UnicodeDecodeError), and a file whose name `get` would refuse
    (an editor's backup, a dashed name) is not listed as a template."""
    prompts_dir = tmp_path / "prompts"
    prompts_dir.mkdir()
    (prompts_dir / "plan.txt").write_text("Plan $goal.", encoding="utf-8")
    (prompts_dir / "garbled.txt").write_bytes(b"\xff\xfe not utf-8 \xc3")
    (prompts_dir / "tools-v2.txt").write_text("x", encoding="utf-8")
    (prompts_dir / "plan.txt~").write_text("x", encoding="utf-8")
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    assert template_names() == ["garbled", "plan"]
    prompts = PromptRepository()
    with pytest.raises(PromptUnreadable, match="'garbled' cannot be read"):
        prompts.load()
    assert prompts.statistics().size == 1  # plan, read though garbled came first
    assert prompts.render("plan", goal="x") == "Plan x."
