"""Recall with the real local embedding model (all-MiniLM-L6-v2, loaded from its wheel):
a paraphrase of a memory ranks above unrelated memories. Slow: loading the model takes
seconds; skipped only when the model cannot be loaded at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from agents.embeddings._embedder import EmbedderUnavailable
from agents.embeddings._local import LocalEmbedder

from .conftest import open_lab

MODEL_TIMEOUT_S = 180  # a cold load reads ~100 MB of weights and imports torch

MEMORIES = {
    "dentist": "I have a dentist appointment next Tuesday at 3 pm.",
    "allergy": "My daughter is allergic to peanuts.",
    "wifi": "The office wifi password is taped under the router.",
    "car": "The car is parked on level 4 of the airport garage.",
    "recipe": "Grandma's lasagne needs three layers of bechamel.",
}
PARAPHRASES = {
    "dentist": "when is my appointment with the tooth doctor?",
    "allergy": "which foods can't my kid eat?",
    "wifi": "how do I get onto the internet at work?",
    "car": "where did I leave the vehicle at the airport?",
}


@pytest.mark.slow
async def test_a_paraphrase_recalls_its_memory_first(tmp_path: Path) -> None:
    embedder = LocalEmbedder()
    try:
        with trio.fail_after(MODEL_TIMEOUT_S):
            await embedder.warm_up()
    except EmbedderUnavailable as exc:
        pytest.skip(f"the local model cannot be loaded here: {exc}")
    with trio.fail_after(MODEL_TIMEOUT_S):
        async with open_lab(tmp_path / "data", embedder=embedder) as lab:
            ids = {}
            for name, text in MEMORIES.items():
                ids[name] = (await lab.call("remember", content=text, user="u"))["memory_id"]
            for name, question in PARAPHRASES.items():
                result = await lab.call("recall", query=question, user="u", k=5)
                ranked = [m["memory_id"] for m in result["memories"]]
                assert ranked[0] == ids[name], (question, result["memories"])
                scores = [m["score"] for m in result["memories"]]
                assert scores[0] > scores[1] + 0.05
