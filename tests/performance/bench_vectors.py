"""Vector memory benchmark: flat against IVF search, and restarting the memory projection.

From the project root:

    .venv/bin/python -m tests.performance.bench_vectors [--quick] [--out PATH] [--markdown]

1. search: 10k, 100k and 1M 384-d unit vectors of two seeded numpy data sets (--quick:
   10k and 30k). Exact top-10 from a batched flat search is the ground truth. Flat
   (`IndexFlatIP`, what the projection uses while small) is timed one query at a time,
   as `recall` asks. IVF is built exactly as the memory projection builds it
   (`projections/_vector_index.py`: sqrt(n) lists, trained on an even sample of up to 64
   points per list, 10 k-means iterations) and timed one query at a time at several
   nprobe values: queries per second and recall@10.
2. restart: a data dir with 100k sealed `MemoryAdded` events of one user (10k with
   --quick), then the `memory` projection made ready three ways: a full rebuild from the
   log (the runner catching up: open each sealed embedding, add it; IVF trainings run in
   the background meanwhile, as in the server), a restart from its snapshot, and a
   restart from the snapshot plus 1% more events after it.

Data (queries are fresh draws of the same distribution):
- "clustered": 1024 topics x 8 subtopics; a vector is topic + subtopic offset + 1.2 x
  noise (each a random unit direction), normalised. A query's nearest neighbour has
  cosine ~0.6. With more vectors each subtopic gets denser and its members share an
  IVF list, so this set gets easier as it grows.
- "continuous": a 32-d latent mixture of 512 wide, overlapping Gaussians (spread 1.5)
  mapped to 384-d by a fixed random matrix, plus 0.35 x isotropic noise, normalised:
  low intrinsic dimension like real embeddings, with no gaps between clusters, so
  neighbours straddle IVF cells at every size. The harder, more honest case; the
  restart part uses it too.

Single queries are timed with FAISS on one thread (`SEARCH_THREADS`): a one-row search
gains nothing from OpenMP, and on a busy 2-core machine its thread hand-offs made flat
queries 4-6x slower. Builds (training, adding) use every core.

Writes JSON (default `tests/performance/results/bench_vectors.json`) and prints tables.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography
import faiss
import numpy as np
from numpy.typing import NDArray

from events import ANY, LmdbEventLog
from events._store import prepare_append
from projections import (
    IndexOptions,
    LmdbStateStore,
    MemoryKeyStore,
    MemoryProjection,
    ProjectionRunner,
    seal_memory,
)
from projections._vector_index import ivf_lists, sample_rows, train_ivf

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table, timed

DEFAULT_OUT = RESULTS_DIR / "bench_vectors.json"
DIM = 384
K = 10
SEED = 20261127
TOPICS, SUBTOPICS = 1024, 8
SUBTOPIC_SPREAD, NOISE = 1.0, 1.2
LATENT_DIM, LATENT_CENTRES, LATENT_SPREAD, LATENT_NOISE = 32, 512, 1.5, 0.35
NPROBES = (1, 4, 8, 16, 32, 64, 128, 256)
SEARCH_THREADS = 1
RECALL_TARGET = 0.95
SPEEDUP_TARGET = 10.0
APPEND_BATCH = 1000
USER = "bench"
MODEL = "bench-clustered-384"

Matrix = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Sizes:
    search_sizes: tuple[int, ...]
    queries: int
    flat_queries_cap: int  # single flat queries timed at most (1M: ~0.1 s each)
    restart_memories: int
    ivf_threshold: int


FULL = Sizes((10_000, 100_000, 1_000_000), 200, 30, 100_000, 10_000)
QUICK = Sizes((10_000, 30_000), 100, 30, 10_000, 2_000)


class Clustered:
    """Seeded two-level clustered unit vectors (see module docstring)."""

    name = "clustered"

    def __init__(self, dim: int = DIM, seed: int = SEED) -> None:
        self.dim = dim
        rng = np.random.default_rng(seed)
        self.topics = _directions(rng, TOPICS, dim)
        offsets = _directions(rng, TOPICS * SUBTOPICS, dim)
        self.subtopics = np.repeat(self.topics, SUBTOPICS, axis=0) + SUBTOPIC_SPREAD * offsets

    def draw(self, count: int, seed: int, chunk: int = 100_000) -> Matrix:
        rng = np.random.default_rng(seed)
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            centres = self.subtopics[rng.integers(0, len(self.subtopics), size)]
            rows = centres + NOISE * _directions(rng, size, self.dim)
            out[start : start + size] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return out


class Continuous:
    """Seeded unit vectors of low intrinsic dimension (see module docstring)."""

    name = "continuous"

    def __init__(self, dim: int = DIM, seed: int = SEED) -> None:
        self.dim = dim
        rng = np.random.default_rng(seed)
        scale = np.float32(1 / np.sqrt(LATENT_DIM))
        self.mixing = rng.standard_normal((LATENT_DIM, dim), dtype=np.float32) * scale
        self.centres = rng.standard_normal((LATENT_CENTRES, LATENT_DIM), dtype=np.float32)

    def draw(self, count: int, seed: int, chunk: int = 100_000) -> Matrix:
        rng = np.random.default_rng(seed)
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            latent = self.centres[rng.integers(0, LATENT_CENTRES, size)]
            latent += LATENT_SPREAD * rng.standard_normal((size, LATENT_DIM), dtype=np.float32)
            noise = rng.standard_normal((size, self.dim), dtype=np.float32) / np.sqrt(self.dim)
            rows = latent @ self.mixing + LATENT_NOISE * noise
            out[start : start + size] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return out


DataSet = Clustered | Continuous


def _directions(rng: np.random.Generator, count: int, dim: int) -> Matrix:
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    result: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return result


def recall_at_k(found: NDArray[np.int64], truth: NDArray[np.int64]) -> float:
    hits = sum(len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def single_query_qps(index: faiss.Index, queries: Matrix) -> tuple[float, NDArray[np.int64]]:
    """Queries per second asking one at a time (as recall does), and the ids found."""
    found = np.empty((len(queries), K), dtype=np.int64)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(SEARCH_THREADS)
    try:
        index.search(queries[:1], K)  # warm-up: first-touch of pages, thread pool
        with timed() as watch:
            for i in range(len(queries)):
                found[i] = index.search(queries[i : i + 1], K)[1][0]
    finally:
        faiss.omp_set_num_threads(threads)
    return len(queries) / watch.seconds, found


# --- 1. search -----------------------------------------------------------------------


def bench_search(size: int, sizes: Sizes, data: DataSet) -> dict[str, Any]:
    with timed() as gen:
        vectors = data.draw(size, seed=size)
        queries = data.draw(sizes.queries, seed=size + 1)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    with timed() as batch:
        truth = flat.search(queries, K)[1]
    flat_queries = queries[: sizes.flat_queries_cap]
    flat_qps, _ = single_query_qps(flat, flat_queries)
    del flat
    lists = ivf_lists(size)
    sample = vectors[sample_rows(size, lists)]
    with timed() as train:
        ivf = train_ivf(DIM, lists, sample)
    with timed() as add:
        ivf.add_with_ids(vectors, np.arange(size, dtype=np.int64))
    del vectors, sample
    runs = []
    for nprobe in NPROBES:
        if nprobe > lists:
            break
        ivf.nprobe = nprobe
        qps, found = single_query_qps(ivf, queries)
        runs.append(
            {
                "nprobe": nprobe,
                "qps": round(qps, 1),
                "recall_at_10": round(recall_at_k(found, truth), 4),
                "speedup_vs_flat": round(qps / flat_qps, 1),
            }
        )
    good = [r for r in runs if r["recall_at_10"] >= RECALL_TARGET]
    best = max(good, key=lambda r: r["qps"]) if good else None
    return {
        "data": data.name,
        "vectors": size,
        "dim": DIM,
        "queries": sizes.queries,
        "generate_s": round(gen.seconds, 2),
        "flat": {
            "single_query_qps": round(flat_qps, 1),
            "timed_queries": len(flat_queries),
            "batch_qps": round(sizes.queries / batch.seconds, 1),
        },
        "ivf": {
            "lists": lists,
            "train_points": len(sample_rows(size, lists)),
            "train_s": round(train.seconds, 2),
            "add_s": round(add.seconds, 2),
            "runs": runs,
        },
        "best_at_target_recall": best,
        "meets_target": bool(best and best["speedup_vs_flat"] >= SPEEDUP_TARGET),
    }


# --- 2. restart ----------------------------------------------------------------------


def write_memories(log: LmdbEventLog, keys: MemoryKeyStore, vectors: Matrix) -> None:
    key = keys.current_or_create(USER)
    for start in range(0, len(vectors), APPEND_BATCH):
        events = [
            seal_memory(key, uuid.uuid4().hex, f"memory number {start + i}", row, MODEL)
            for i, row in enumerate(vectors[start : start + APPEND_BATCH])
        ]
        request = prepare_append(f"memory-{USER}", events, ANY, 1 << 22)
        log.commit([request], time.time_ns())


def ready(
    log: LmdbEventLog, state: LmdbStateStore, keys: MemoryKeyStore, options: IndexOptions
) -> tuple[MemoryProjection, ProjectionRunner, float]:
    """A projection made ready as the server does (restore, catch up); seconds it took."""
    projection = MemoryProjection(keys, options)
    runner = ProjectionRunner(log, state, [projection], snapshot_every=1 << 40)
    with timed() as watch:
        runner.prepare()
        runner.catch_up()
    return projection, runner, watch.seconds


def bench_restart(sizes: Sizes, data: DataSet, work_dir: Path) -> dict[str, Any]:
    count = sizes.restart_memories
    options = IndexOptions(ivf_threshold=sizes.ivf_threshold)
    keys = MemoryKeyStore()
    log = LmdbEventLog.open(work_dir / "data", sync=False, map_size=1 << 30)
    state = LmdbStateStore.open(work_dir / "projections", sync=False, map_size=1 << 30)
    try:
        vectors = data.draw(count + count // 100, seed=7)
        with timed() as writing:
            write_memories(log, keys, vectors[:count])
        rebuilt, runner, rebuild_s = ready(log, state, keys, options)
        with timed() as training:
            rebuilt.wait_for_training()
        with timed() as snapshot:
            runner.flush_snapshots()
        rebuilt.close()
        snapshot_bytes = len(state.snapshot(MemoryProjection.name) or b"")
        restored, _, restore_s = ready(log, state, keys, options)
        same = restored.comparable_state(restored.snapshot()) == rebuilt.comparable_state(
            rebuilt.snapshot()
        )
        restored_stats = restored.statistics()
        restored.close()
        write_memories(log, keys, vectors[count:])
        tail, _, tail_s = ready(log, state, keys, options)
        tail.close()
        return {
            "memories": count,
            "dim": DIM,
            "ivf_threshold": sizes.ivf_threshold,
            "write_events_s": round(writing.seconds, 2),
            "log_bytes": log.statistics().size_bytes,
            "full_rebuild": {
                "ready_s": round(rebuild_s, 2),
                "events_per_s": round(count / rebuild_s),
                "ivf_trainings_finished_after_s": round(rebuild_s + training.seconds, 2),
            },
            "snapshot": {"write_s": round(snapshot.seconds, 2), "bytes": snapshot_bytes},
            "from_snapshot": {
                "ready_s": round(restore_s, 2),
                "memories": restored_stats.memories,
                "ivf_users": restored_stats.ivf_users,
                "equals_rebuild": same,
            },
            "from_snapshot_plus_tail": {
                "tail_events": len(vectors) - count,
                "ready_s": round(tail_s, 2),
            },
            "speedup": round(rebuild_s / restore_s, 1),
        }
    finally:
        state.close()
        log.close()


# --- report --------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    rows = []
    for search in result["search"]:
        flat = search["flat"]
        qps = flat["single_query_qps"]
        rows.append([search["data"], search["vectors"], "flat", "-", "-", qps, "1", 1.0])
        for run in search["ivf"]["runs"]:
            rows.append(
                [
                    search["data"],
                    search["vectors"],
                    f"IVF{search['ivf']['lists']}",
                    run["nprobe"],
                    f"{search['ivf']['train_s'] + search['ivf']['add_s']:.1f}",
                    run["qps"],
                    f"{run['recall_at_10']:.3f}",
                    run["speedup_vs_flat"],
                ]
            )
    restart = result["restart"]
    targets = [
        [
            search["data"],
            search["vectors"],
            best["nprobe"] if (best := search["best_at_target_recall"]) else "-",
            f"{best['recall_at_10']:.3f}" if best else "-",
            best["speedup_vs_flat"] if best else "-",
            search["meets_target"],
        ]
        for search in result["search"]
    ]
    return [
        Table(
            f"Fastest IVF setting with recall@10 >= {RECALL_TARGET} (target: >= "
            f"{SPEEDUP_TARGET:g}x flat QPS)",
            ["data", "vectors", "nprobe", "recall@10", "x flat QPS", "meets target"],
            targets,
        ),
        Table(
            f"Search, {DIM}-d unit vectors, one query at a time, top-{K}",
            ["data", "vectors", "index", "nprobe", "build s", "QPS", "recall@10", "x flat QPS"],
            rows,
        ),
        Table(
            f"Restart of the memory projection with {restart['memories']:,} memories",
            ["how", "ready s", "note"],
            [
                [
                    "full rebuild from the log",
                    f"{restart['full_rebuild']['ready_s']:.2f}",
                    "IVF trainings done at "
                    f"{restart['full_rebuild']['ivf_trainings_finished_after_s']:.1f} s",
                ],
                [
                    "from snapshot",
                    f"{restart['from_snapshot']['ready_s']:.2f}",
                    f"snapshot {restart['snapshot']['bytes'] / 1e6:.0f} MB, "
                    f"equals rebuild: {restart['from_snapshot']['equals_rebuild']}",
                ],
                [
                    "from snapshot + 1% tail",
                    f"{restart['from_snapshot_plus_tail']['ready_s']:.2f}",
                    f"{restart['from_snapshot_plus_tail']['tail_events']:,} events after it",
                ],
            ],
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, work_dir_help="where the restart data goes")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with scratch_dir(args.work_dir, "bench-vectors-") as work_dir:
        result = result_header("bench_vectors", args.quick, argv, work_dir) | {
            "versions": {
                "faiss": faiss.__version__,
                "numpy": np.__version__,
                "cryptography": cryptography.__version__,
                "faiss_threads": faiss.omp_get_max_threads(),
                "faiss_search_threads": SEARCH_THREADS,
            },
            "targets": {"recall_at_10": RECALL_TARGET, "speedup_vs_flat": SPEEDUP_TARGET},
        }
        with timed() as total:
            result["search"] = []
            for data in (Clustered(), Continuous()):
                for size in sizes.search_sizes:
                    with timed() as one:
                        result["search"].append(bench_search(size, sizes, data))
                    result["search"][-1]["total_s"] = round(one.seconds, 1)
                    print(f"{data.name} search at {size:,}: {one.seconds:.1f} s", flush=True)
            result["restart"] = bench_restart(sizes, Continuous(), work_dir)
    finish(result, args.out, report_tables, seconds=total.seconds, markdown=args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
