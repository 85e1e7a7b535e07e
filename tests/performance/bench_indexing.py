"""Document indexing benchmark: batched embeddings against one request per document.

From the project root:

    .venv/bin/python -m tests.performance.bench_indexing [--quick] [--json-out PATH] [--markdown]

100 generated documents (three or four paragraphs each, a third each Markdown, plain
text and HTML, every one a single chunk at the default 1,200 characters) are indexed
by the real indexer (`DocumentsService.index`, as the `documents.index` tool runs it:
walk, read, sha256, extract and chunk in a thread, embed, one `DocumentIndexed` per
file appended to an LMDB store with sync on, the `documents` projection following).
Each measured pass indexes into a fresh data dir, so nothing is unchanged.

1. remote: `OpenAIEmbedder` (the real openai SDK) against the simulator with its
   "realistic" latency profile (an embeddings request takes ~0.2 s, log-normal spread;
   time scale 0.1 with --quick), 64 inputs per request (the `[embeddings] batch_size`
   default) and 4 requests in flight: batched against one request per document
   (`features.batch_embeddings = false`). Requests are counted by the embedder and by
   the simulator; wall time is the median of the passes.
2. local: `LocalEmbedder` (all-MiniLM-L6-v2 on the CPU, loaded before timing): encoder
   batches of 64 against one document per encoder call.
3. unchanged: indexing the same folder again, once per embedder: no embedding request.

The baseline is measured in the same run. Writes JSON (default
`tests/performance/results/indexing.json`) and prints tables.
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import trio

from agents.embeddings._embedder import Embedder
from agents.embeddings._local import LocalEmbedder
from agents.tools import DocumentsAccess, DocumentsService
from agents.tools._workspace import Workspace
from events import StoreOptions, open_event_store
from projections import DocumentsProjection, LmdbStateStore, ProjectionRunner

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, WORDS, Table, median, timed
from ._embedding_sim import (
    BATCH_SIZE,
    embeddings_simulator,
    simulated_embedder,
    simulator_settings,
)

DEFAULT_OUT = RESULTS_DIR / "indexing.json"
IN_FLIGHT = 4
SEED = 11


@dataclass(frozen=True, slots=True)
class Sizes:
    documents: int
    time_scale: float
    repeats: int


FULL = Sizes(documents=100, time_scale=1.0, repeats=3)
QUICK = Sizes(documents=20, time_scale=0.1, repeats=1)
EmbedderFactory = Callable[[bool], AbstractAsyncContextManager[Embedder]]


# --- the documents -----------------------------------------------------------------------


def _paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(2):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 12))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def write_documents(folder: Path, count: int, seed: int = SEED) -> None:
    """`count` documents of 3-4 paragraphs, Markdown, text and HTML in turn."""
    rng = random.Random(seed)
    for index in range(count):
        title = f"Note {index}: {rng.choice(WORDS)} {rng.choice(WORDS)}"
        paragraphs = [_paragraph(rng) for _ in range(rng.randint(3, 4))]
        kind = index % 3
        if kind == 0:
            text, suffix = "\n\n".join([f"# {title}", *paragraphs]) + "\n", ".md"
        elif kind == 1:
            text, suffix = "\n\n".join([title, *paragraphs]) + "\n", ".txt"
        else:
            body = "".join(f"<p>{p}</p>" for p in paragraphs)
            text = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}"
            text, suffix = text + "</body></html>\n", ".html"
        (folder / f"doc{index:03}{suffix}").write_text(text)


# --- one indexing pass -----------------------------------------------------------------------


@asynccontextmanager
async def open_indexer(
    data_dir: Path, workspace: Path, embedder: Embedder
) -> AsyncIterator[DocumentsService]:
    """The documents stack over a fresh data dir, as the server wires it."""
    projection = DocumentsProjection()
    async with open_event_store(data_dir, StoreOptions(sync=True)) as store:
        state = LmdbStateStore.open(data_dir / "projections")
        try:
            async with trio.open_nursery() as nursery:
                runner = ProjectionRunner(store.log, state, [projection])
                await nursery.start(runner.run, store)
                access = DocumentsAccess(embedder, projection, runner.wait_for)
                yield DocumentsService(access, store, Workspace.of([workspace]))
                nursery.cancel_scope.cancel()
        finally:
            state.close()
            projection.close()


async def index_pass(
    work: Path, embedder: Embedder, *, again: bool = False
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Index `work/workspace/docs` into a fresh data dir (and a second time, `again`)."""
    data_dir = Path(tempfile.mkdtemp(dir=work, prefix="data-"))
    async with open_indexer(data_dir, work / "workspace", embedder) as service:
        first = await service.index("docs", "bench")
        second = await service.index("docs", "bench") if again else None
    return first, second


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    counts = result["counts"]
    return {key: counts[key] for key in ("indexed", "unchanged", "chunks", "embedding_requests")}


async def measure(
    work: Path, open_embedder: EmbedderFactory, batched: bool, repeats: int, prime: bool = False
) -> dict[str, Any]:
    """Median wall time of `repeats` passes, with the counts of the last one.

    `prime`: one untimed embedding call first (the local model's first calls pay
    one-off set-up costs); not for the simulator, whose requests are counted (the
    vector size is configured there, so no probe request is made either).
    """
    seconds, requests, figures = [], [], {}
    async with open_embedder(batched) as embedder:
        if prime:
            await embedder.embed([f"warm-up text {i} " * 30 for i in range(8)])
        for _ in range(repeats):
            result, _ = await index_pass(work, embedder)
            figures = _figures(result)
            seconds.append(result["counts"]["seconds"])
            requests.append(figures["embedding_requests"])
    return {
        "mode": "batched" if batched else "one request per document",
        **figures,
        "requests_per_pass": requests,
        "wall_s": round(median(seconds), 3),
        "wall_s_runs": seconds,
    }


async def unchanged_pass(work: Path, open_embedder: EmbedderFactory) -> dict[str, Any]:
    async with open_embedder(True) as embedder:
        first, second = await index_pass(work, embedder, again=True)
    assert second is not None
    return {
        "first": _figures(first),
        "again": _figures(second),
        "again_wall_s": second["counts"]["seconds"],
    }


def _ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    batched, single = runs
    return {
        "wall_time": round(single["wall_s"] / batched["wall_s"], 1),
        "requests": round(single["embedding_requests"] / max(1, batched["embedding_requests"]), 1),
    }


# --- 1. remote, 3. unchanged ------------------------------------------------------------------


async def _remote(work: Path, sizes: Sizes) -> dict[str, Any]:
    sim = embeddings_simulator(sizes.time_scale, SEED)
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(sim.serve)

        @asynccontextmanager
        async def remote(batched: bool) -> AsyncIterator[Embedder]:
            async with simulated_embedder(port, batched=batched, in_flight=IN_FLIGHT) as embedder:
                yield embedder

        runs = []
        for batched in (True, False):
            sim.reset_statistics()
            run = await measure(work, remote, batched, sizes.repeats)
            seen = sim.statistics().by_endpoint.get("/v1/embeddings", 0)
            run["requests_seen_by_simulator_per_pass"] = seen / sizes.repeats
            runs.append(run)
        sim.reset_statistics()
        unchanged = await unchanged_pass(work, remote)
        unchanged["simulator_requests_both_passes"] = sim.statistics().by_endpoint.get(
            "/v1/embeddings", 0
        )
        nursery.cancel_scope.cancel()
    return {
        "simulator": {
            **simulator_settings(sizes.time_scale),
            "requests_in_flight": IN_FLIGHT,
            "inputs_per_request": BATCH_SIZE,
        },
        "runs": runs,
        "ratio_one_per_document_vs_batched": _ratios(runs),
        "unchanged": unchanged,
    }


# --- 2. local ---------------------------------------------------------------------------------


async def _local(work: Path, sizes: Sizes) -> dict[str, Any]:
    @asynccontextmanager
    async def local(batched: bool) -> AsyncIterator[Embedder]:
        async with LocalEmbedder(batch_size=BATCH_SIZE, batch_embeddings=batched) as embedder:
            yield embedder

    with timed() as load:
        await LocalEmbedder().warm_up()
    runs = [await measure(work, local, b, sizes.repeats, prime=True) for b in (True, False)]
    unchanged = await unchanged_pass(work, local)
    return {
        "model": "all-MiniLM-L6-v2",
        "first_load_s": round(load.seconds, 2),
        "encoder_batch": BATCH_SIZE,
        "runs": runs,
        "ratio_one_per_document_vs_batched": _ratios(runs),
        "unchanged": unchanged,
    }


# --- report --------------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    tables = []
    for part, title in (
        ("remote", "OpenAIEmbedder against the simulator (realistic latency, time scale {scale})"),
        ("local", "LocalEmbedder all-MiniLM-L6-v2 on {cpus} cores"),
    ):
        section = result.get(part)
        if not section:
            continue
        scale = result.get("remote", {}).get("simulator", {}).get("time_scale")
        rows: list[list[object]] = [
            [r["mode"], r["indexed"], r["chunks"], r["embedding_requests"], f"{r['wall_s']:.3f}"]
            for r in section["runs"]
        ]
        unchanged = section["unchanged"]
        rows.append(
            [
                "re-index unchanged",
                unchanged["again"]["indexed"],
                unchanged["again"]["chunks"],
                unchanged["again"]["embedding_requests"],
                f"{unchanged['again_wall_s']:.3f}",
            ]
        )
        ratio = section["ratio_one_per_document_vs_batched"]
        heading = title.format(scale=scale, cpus=result["machine"]["cpus"])
        tables.append(
            Table(
                f"{result['documents']} documents, {heading}: one per document / batched = "
                f"{ratio['wall_time']}x wall time, {ratio['requests']}x requests",
                ["mode", "indexed", "chunks", "embedding requests", "wall s"],
                rows,
            )
        )
    return tables


async def run_benchmark(work: Path, sizes: Sizes, local: bool = True) -> dict[str, Any]:
    """Both parts over documents written under `work/workspace/docs`."""
    docs = work / "workspace" / "docs"
    docs.mkdir(parents=True)
    write_documents(docs, sizes.documents)
    result: dict[str, Any] = {"documents": sizes.documents}
    result["remote"] = await _remote(work, sizes)
    if local:
        result["local"] = await _local(work, sizes)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, out_flag="--json-out")
    parser.add_argument("--no-local", action="store_true", help="skip the local embedder")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with scratch_dir(None, "bench-indexing-") as work, timed() as total:
        result = result_header("bench_indexing", args.quick, argv, work) | {
            "versions": {"openai": openai.__version__, "trio": trio.__version__},
        }
        result.update(trio.run(run_benchmark, work, sizes, not args.no_local))
    finish(result, args.out, report_tables, seconds=total.seconds, markdown=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
