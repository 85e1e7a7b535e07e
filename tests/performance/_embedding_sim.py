"""The simulated embeddings endpoint the embedding benchmarks send their requests to:
the simulator with "realistic" latency, and `OpenAIEmbedder`s pointed at it."""

from __future__ import annotations

from typing import Any

from agents.embeddings._openai import OpenAIEmbedder, OpenAIEmbedderOptions
from agents.offline._simulator import REALISTIC, Simulator, SimulatorOptions

BATCH_SIZE = 64  # inputs per request: the `[embeddings] batch_size` default
SIM_DIM = 256


def embeddings_simulator(time_scale: float, seed: int) -> Simulator:
    """A simulator with realistic latency (an embeddings request ~0.12 s plus its input
    tokens at 100k/s, x `time_scale`)."""
    options = SimulatorOptions(
        latency_profile="realistic", time_scale=time_scale, seed=seed, embedding_dim=SIM_DIM
    )
    return Simulator(options)


def simulator_settings(time_scale: float) -> dict[str, Any]:
    """The simulator's settings as the results record them."""
    return {
        "latency_profile": "realistic",
        "time_scale": time_scale,
        "embed_base_s": REALISTIC.embed_base_s * time_scale,
        "embed_tokens_per_s": REALISTIC.embed_tokens_per_s / time_scale if time_scale else None,
    }


def simulated_embedder(port: int, *, batched: bool, in_flight: int) -> OpenAIEmbedder:
    """The real SDK against the simulator on `port`: `BATCH_SIZE` inputs per request
    (`batched`) or one, `in_flight` requests at a time, no retries."""
    options = OpenAIEmbedderOptions(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="sk-bench",
        dimensions=SIM_DIM,  # known size: no probe request
        batch_size=BATCH_SIZE,
        batch_embeddings=batched,
        max_concurrent_requests=in_flight,
        max_retries=0,
    )
    return OpenAIEmbedder(options)
