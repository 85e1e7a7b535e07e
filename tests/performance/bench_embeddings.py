"""Embeddings benchmark: batched requests against one request per document, and local throughput.

From the project root:

    .venv/bin/python -m tests.performance.bench_embeddings [--quick] [--out PATH] [--markdown]

1. remote: 100 documents through `OpenAIEmbedder` (the real openai SDK) against the
   simulator with its "realistic" latency profile (an embeddings request takes ~0.2 s,
   log-normal spread; time scale 0.1 with --quick): batched (64 documents per request, the
   `[embeddings] batch_size` default) against one request per document
   (`features.batch_embeddings = false`), each with 4 requests in flight and with 1.
   Requests are counted by the embedder and by the simulator; the vectors of the two
   approaches are compared.
2. local: `LocalEmbedder` (all-MiniLM-L6-v2 on the CPU) on each runtime, the shipped
   one first: "numpy" (the default, `agents/embeddings/_bert.py`), then "torch"
   (sentence-transformers, torch's default threads; a diagnostic row). For each: the
   first load in this process (numpy's before torch is imported; torch's import counted
   in its own), sentences/s at encoder batch sizes 1, 16 and 64, and the same 100
   documents at batch sizes 1 and 64: wall time and the process's CPU time, median of 3
   runs after an untimed warm-up call.

Writes JSON (default `tests/performance/results/bench_embeddings.json`) and prints tables.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import trio

from agents.embeddings._embedder import Embedder
from agents.embeddings._local import LocalEmbedder
from agents.offline._simulator import Simulator

from ._cli import finish, make_parser, result_header
from ._common import RESULTS_DIR, WORDS, Table, clocked, median, timed
from ._embedding_sim import (
    BATCH_SIZE,
    embeddings_simulator,
    simulated_embedder,
    simulator_settings,
)

DEFAULT_OUT = RESULTS_DIR / "bench_embeddings.json"
DOCUMENTS = 100
RUNTIMES = ("numpy", "torch")  # the shipped one first; torch's row is a diagnostic
SEED = 7


@dataclass(frozen=True, slots=True)
class Sizes:
    time_scale: float
    sentences: int
    sentence_batch_sizes: tuple[int, ...]
    local_documents: int
    repeats: int


FULL = Sizes(
    time_scale=1.0,
    sentences=512,
    sentence_batch_sizes=(1, 16, 64),
    local_documents=DOCUMENTS,
    repeats=3,
)
QUICK = Sizes(
    time_scale=0.1, sentences=32, sentence_batch_sizes=(1, 64), local_documents=8, repeats=1
)


def make_texts(count: int, words: tuple[int, int], seed: int) -> list[str]:
    """`count` deterministic texts of `words[0]..words[1]` words each, as sentences."""
    rng = random.Random(seed)
    texts = []
    for index in range(count):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
        texts.append(f"Item {index}: {body}.")
    return texts


# --- 1. remote: batched vs one request per document ----------------------------------


async def _remote_run(
    sim: Simulator, port: int, documents: list[str], *, batched: bool, in_flight: int
) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    sim.reset_statistics()
    async with simulated_embedder(port, batched=batched, in_flight=in_flight) as embedder:
        with timed() as clock:
            vectors = await embedder.embed(documents)
        stats = embedder.statistics()
    served = sim.statistics()
    run = {
        "mode": "batched" if batched else "one per document",
        "documents_per_request": BATCH_SIZE if batched else 1,
        "requests_in_flight": in_flight,
        "requests": stats.requests,
        "requests_seen_by_simulator": served.by_endpoint.get("/v1/embeddings", 0),
        "connections_opened": served.connections_opened,
        "wall_s": round(clock.seconds, 3),
        "documents_per_s": round(len(documents) / clock.seconds, 1),
    }
    return run, vectors


async def _remote(sizes: Sizes) -> dict[str, Any]:
    documents = make_texts(DOCUMENTS, (60, 120), SEED)
    sim = embeddings_simulator(sizes.time_scale, SEED)
    runs: list[dict[str, Any]] = []
    vectors: list[np.ndarray[Any, Any]] = []
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(sim.serve)
        for batched, in_flight in ((True, 4), (True, 1), (False, 4), (False, 1)):
            run, result = await _remote_run(
                sim, port, documents, batched=batched, in_flight=in_flight
            )
            runs.append(run)
            vectors.append(result)
        nursery.cancel_scope.cancel()
    batched_s = runs[0]["wall_s"]
    return {
        "documents": len(documents),
        "document_chars_mean": round(sum(map(len, documents)) / len(documents)),
        "simulator": simulator_settings(sizes.time_scale),
        "runs": runs,
        "speedup_vs_one_per_document": {
            "4_in_flight": round(runs[2]["wall_s"] / batched_s, 1),
            "sequential": round(runs[3]["wall_s"] / batched_s, 1),
        },
        "max_abs_difference_batched_vs_single": float(np.abs(vectors[0] - vectors[2]).max()),
    }


# --- 2. local throughput -------------------------------------------------------------


async def _load_local(runtime: str) -> tuple[LocalEmbedder, float]:
    embedder = LocalEmbedder(runtime=runtime)
    with timed() as clock:
        await embedder.warm_up()
    return embedder, clock.seconds


async def _throughput(embedder: Embedder, texts: list[str], repeats: int) -> dict[str, Any]:
    await embedder.embed(texts[:64])  # untimed: first calls pay one-off set-up costs
    times, cpu_times = [], []
    for _ in range(repeats):
        with clocked() as clock:
            await embedder.embed(texts)
        times.append(clock.wall)
        cpu_times.append(clock.cpu)
    seconds, cpu_seconds = median(times), median(cpu_times)
    # CPU seconds (all threads of this process) say less about other jobs on the machine
    # than wall time does: with the cores shared, wall time is stretched, CPU time less.
    return {
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "per_s": round(len(texts) / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 3),
        "per_cpu_s": round(len(texts) / cpu_seconds, 1),
    }


async def _local(sizes: Sizes) -> dict[str, Any]:
    sentences = make_texts(sizes.sentences, (8, 20), SEED + 1)
    documents = make_texts(sizes.local_documents, (60, 120), SEED)
    runs = [await _local_runtime(runtime, sizes, sentences, documents) for runtime in RUNTIMES]
    return {
        "model": runs[0]["model"],
        "dim": runs[0]["dim"],
        "sentence_words": [8, 20],
        "document_words": [60, 120],
        "runtimes": runs,
    }


async def _local_runtime(
    runtime: str, sizes: Sizes, sentences: list[str], documents: list[str]
) -> dict[str, Any]:
    loaded, load_s = await _load_local(runtime)
    by_sentence_batch = []
    for size in sizes.sentence_batch_sizes:
        embedder = LocalEmbedder(batch_size=size, runtime=runtime)
        figures = await _throughput(embedder, sentences, sizes.repeats)
        by_sentence_batch.append({"batch_size": size, **figures})
    by_document_batch = []
    for size in (1, BATCH_SIZE):
        embedder = LocalEmbedder(batch_size=size, runtime=runtime)
        figures = await _throughput(embedder, documents, sizes.repeats)
        by_document_batch.append({"batch_size": size, **figures})
    return {
        "runtime": loaded.runtime,
        "row": "default" if runtime == RUNTIMES[0] else "diagnostic",
        "model": loaded.model,
        "dim": loaded.dim,
        "threads": _threads(runtime),
        "first_load_s": round(load_s, 2),
        "sentences": by_sentence_batch,
        "documents": by_document_batch,
    }


def _threads(runtime: str) -> int:
    if runtime == "torch":
        import torch  # only for its row: the rest of the benchmark needs no torch

        return int(torch.get_num_threads())
    return len(os.sched_getaffinity(0))  # OpenBLAS's default: one thread per core


# --- report --------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    remote, local = result["remote"], result["local"]
    scale = remote["simulator"]["time_scale"]
    return [
        Table(
            f"{remote['documents']} documents through OpenAIEmbedder, simulator with realistic "
            f"latency (an embeddings request {remote['simulator']['embed_base_s']:.2f} s + "
            "its tokens, "
            f"time scale {scale})",
            ["mode", "docs/request", "in flight", "requests", "seen by sim", "wall s", "docs/s"],
            [
                [
                    r["mode"],
                    r["documents_per_request"],
                    r["requests_in_flight"],
                    r["requests"],
                    r["requests_seen_by_simulator"],
                    f"{r['wall_s']:.2f}",
                    r["documents_per_s"],
                ]
                for r in remote["runs"]
            ],
        ),
        Table(
            f"LocalEmbedder {local['model']} ({local['dim']}-d) on {result['machine']['cpus']} "
            "cores; first load in this process: "
            + ", ".join(f"{r['runtime']} {r['first_load_s']:.2f} s" for r in local["runtimes"]),
            [
                "runtime",
                "texts",
                "batch size",
                "count",
                "wall s",
                "texts/s",
                "CPU s",
                "texts/CPU s",
            ],
            [
                [
                    f"{run['runtime']} ({run['row']}, {run['threads']} threads)",
                    kind,
                    r["batch_size"],
                    r["texts"],
                    f"{r['seconds']:.2f}",
                    r["per_s"],
                    f"{r['cpu_seconds']:.2f}",
                    r["per_cpu_s"],
                ]
                for run in local["runtimes"]
                for kind in ("sentences", "documents")
                for r in run[kind]
            ],
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__, DEFAULT_OUT).parse_args(argv)
    sizes = QUICK if args.quick else FULL
    result = result_header("bench_embeddings", args.quick, argv, Path.cwd()) | {
        "versions": {
            "numpy": np.__version__,
            "openai": openai.__version__,
            "trio": trio.__version__,
        },
    }
    with timed() as total:
        result["remote"] = trio.run(_remote, sizes)
        result["local"] = trio.run(_local, sizes)
    result["versions"].update(_model_versions())
    finish(result, args.out, report_tables, seconds=total.seconds, markdown=args.markdown)
    return 0


def _model_versions() -> dict[str, str]:
    import sentence_transformers
    import torch

    return {
        "torch": str(torch.__version__),
        "sentence_transformers": sentence_transformers.__version__,
    }


if __name__ == "__main__":
    sys.exit(main())
