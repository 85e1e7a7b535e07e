"""A FAISS index over one set of vectors: exact (flat) while small, IVF when large.

Vectors are unit rows searched by inner product (cosine). Ids are int64 chosen by the
caller (the memory projection uses log positions). The index starts as
`IndexIDMap2(IndexFlatIP)`; when the live count reaches `ivf_threshold`, an
`IndexIVFFlat` with about sqrt(n) lists is trained on a deterministic sample of the
vectors, and trained again each time the count grows `retrain_growth` times. Training
runs on a `Trainer` (one worker thread) while searches keep using the current index;
the trained index is swapped in (all live vectors added, in id order) at the next
`poll`. IVF keeps a hash-table direct map, so vectors can be read back by id and
`remove_ids` really removes.

Everything a search needs is rebuilt from `dump()` by `load()`: the serialized FAISS
index (`faiss.serialize_index`) and whether a training was pending, which is planned
again on load. `canonical()` is what two indexes holding the same vectors share,
whatever their history (inverted lists are not ordered by id after removals).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import faiss
import numpy as np
from numpy.typing import NDArray

FLAT, IVF = "flat", "ivf"
# FAISS warns below 39 training points per list; sampling up to 64 per list keeps
# training time bounded as the index grows (k-means cost is linear in the sample).
MIN_POINTS_PER_LIST = 39
TRAIN_POINTS_PER_LIST = 64
MAX_LISTS = 65536
KMEANS_SEED = 1234
# Below this many rows an add or search runs on the calling thread alone: OpenMP's
# hand-offs cost more than they save there, 3-13x more on a busy 2-core machine.
SMALL_BATCH = 64

Ids = NDArray[np.int64]
Matrix = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """`[performance]` faiss_ivf_threshold and faiss_nprobe, plus training knobs."""

    ivf_threshold: int = 10_000
    nprobe: int = 8
    retrain_growth: float = 4.0
    train_iterations: int = 10

    def __post_init__(self) -> None:
        if self.ivf_threshold < 1:
            raise ValueError(f"ivf_threshold must be >= 1, got {self.ivf_threshold}")
        if self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")
        if self.retrain_growth <= 1:
            raise ValueError(f"retrain_growth must be > 1, got {self.retrain_growth}")


def ivf_lists(count: int) -> int:
    """Inverted lists for `count` vectors: about sqrt(n), at least 39 points each."""
    return max(1, min(int(math.sqrt(count)), count // MIN_POINTS_PER_LIST, MAX_LISTS))


def sample_rows(count: int, lists: int) -> NDArray[np.intp]:
    """Which of `count` rows (in id order) train `lists` lists: an even, fixed stride."""
    size = min(count, TRAIN_POINTS_PER_LIST * lists)
    return np.linspace(0, count - 1, num=size).astype(np.intp)


def train_ivf(dim: int, lists: int, sample: Matrix, iterations: int = 10) -> faiss.IndexIVFFlat:
    """An empty `IndexIVFFlat` trained on `sample` (deterministic: fixed k-means seed)."""
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = iterations
    index.cp.seed = KMEANS_SEED
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    # The stubs lack DirectMap: a hash-table map reads vectors back by arbitrary id.
    index.set_direct_map_type(cast(Any, faiss).DirectMap.Hashtable)
    return index


@contextlib.contextmanager
def _small_batch(rows: int) -> Iterator[None]:
    """One OpenMP thread for a small batch, in this thread only (the setting is per thread)."""
    if rows >= SMALL_BATCH:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class Trainer:
    """Runs trainings one at a time on a worker thread it owns; `inline` runs them now.

    The thread is joined by `close()` (queued trainings are dropped: a restored index
    plans them again) and at interpreter exit.
    """

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], faiss.IndexIVFFlat]) -> concurrent.futures.Future[Any]:
        if self.inline:
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            done.set_result(job())
            return done
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, "faiss-train")
            return self._pool.submit(job)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class VectorIndex:
    """One FAISS index and its live ids; not thread-safe (the owner holds a lock)."""

    def __init__(self, dim: int, options: IndexOptions, trainer: Trainer) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.options = options
        self._trainer = trainer
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        # Live ids in insertion order (the caller adds in increasing id order).
        self._ids: dict[int, None] = {}
        self._planned = 0  # live count when the last training was planned (0: never)
        self._pending: concurrent.futures.Future[Any] | None = None
        self.trainings = 0

    @property
    def kind(self) -> str:
        return IVF if isinstance(self._index, faiss.IndexIVF) else FLAT

    @property
    def training(self) -> bool:
        return self._pending is not None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: int) -> bool:
        return key in self._ids

    # --- changes ------------------------------------------------------------------------

    def add(self, ids: Ids, vectors: Matrix) -> None:
        """Add unit rows under new ids (an id already present is replaced)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        present = [int(i) for i in ids if int(i) in self._ids]
        if present:
            self.remove(present)
        with _small_batch(len(ids)):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._ids.update(dict.fromkeys(int(i) for i in ids))
        self._maybe_plan()

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        known = [i for i in ids if i in self._ids]
        if not known:
            return 0
        # FAISS's Python layer takes an id array here (the stubs only know IDSelector).
        cast(Any, self._index).remove_ids(np.asarray(known, dtype=np.int64))
        for key in known:
            del self._ids[key]
        return len(known)

    def _maybe_plan(self) -> None:
        growth = self.options.retrain_growth
        due = math.ceil(self._planned * growth) if self._planned else self.options.ivf_threshold
        if len(self._ids) >= due:
            self._plan()

    def _plan(self) -> None:
        """Start a training on a sample of the vectors as they are now."""
        count = len(self._ids)
        self._planned = count
        lists = ivf_lists(count)
        ids = self.live_ids()
        sample = self.vectors(ids[sample_rows(count, lists)])
        dim, iterations = self.dim, self.options.train_iterations
        # A newer plan supersedes an unfinished one: its result is dropped on arrival.
        self._pending = self._trainer.submit(lambda: train_ivf(dim, lists, sample, iterations))
        self.poll()

    def poll(self) -> bool:
        """Swap in a finished training; returns whether the index changed."""
        pending = self._pending
        if pending is None or not pending.done():
            return False
        self._pending = None
        self._swap(pending.result())
        return True

    def wait(self) -> None:
        """Block until a pending training is done, and swap it in."""
        pending = self._pending
        if pending is not None:
            concurrent.futures.wait([pending])
            self.poll()

    def _swap(self, trained: faiss.IndexIVFFlat) -> None:
        ids = self.live_ids()
        if len(ids):
            trained.add_with_ids(self.vectors(ids), ids)
        self._index = trained
        self.trainings += 1

    # --- reads --------------------------------------------------------------------------

    def live_ids(self) -> Ids:
        return np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))

    def vectors(self, ids: Ids) -> Matrix:
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: Matrix = self._index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))
        return rows

    def search(self, queries: Matrix, k: int) -> tuple[NDArray[np.float32], Ids]:
        """Top-k (scores, ids) per query row; missing hits have id -1."""
        self.poll()
        if isinstance(self._index, faiss.IndexIVF):
            self._index.nprobe = min(self.options.nprobe, self._index.nlist)
        with _small_batch(len(queries)):
            scores, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    # --- persistence --------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Plain data `load` restores from (the FAISS index serialized as is)."""
        return {
            "dim": self.dim,
            "index": faiss.serialize_index(self._index).tobytes(),
            "planned": self._planned,
            "pending": self._pending is not None,
            "trainings": self.trainings,
        }

    @classmethod
    def load(
        cls, data: dict[str, Any], options: IndexOptions, trainer: Trainer, *, plan: bool = True
    ) -> VectorIndex:
        """The index `dump` saved; a training pending then is planned again (`plan`)."""
        index = cls(int(data["dim"]), options, trainer)
        raw = np.frombuffer(data["index"], dtype=np.uint8)
        index._index = faiss.deserialize_index(raw)
        index._ids = dict.fromkeys(int(i) for i in _stored_ids(index._index))
        index.trainings = int(data.get("trainings", 0))
        if plan and data["pending"]:
            index._plan()  # on the vectors as restored; the plan's count stays recorded
        index._planned = int(data["planned"])
        return index

    def canonical(self) -> dict[str, Any]:
        """What identifies the contents: ids, a digest of the vectors, the training plan."""
        ids = np.sort(self.live_ids())
        digest = hashlib.sha256(self.vectors(ids).tobytes()).hexdigest()
        return {
            "dim": self.dim,
            "count": len(ids),
            "ids": hashlib.sha256(ids.tobytes()).hexdigest(),
            "vectors": digest,
            "planned": self._planned,
        }


def _stored_ids(index: faiss.Index) -> Ids:
    """Every id in a flat IDMap2 or an IVF index, in id order."""
    if isinstance(index, faiss.IndexIDMap2):
        ids: Ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        return np.sort(ids)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    assert lists is not None
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
        for i in range(ivf.nlist)
        if lists.list_size(i)
    ]
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
