"""`BertEncoder`: a sentence-transformers BERT model run with numpy, without torch.

all-MiniLM-L6-v2 is six small BERT layers: run with numpy's matrix products it embeds a
sentence as torch does (to within float rounding), while the process never imports torch
and sentence-transformers. That import alone took seconds of CPU at every server start
and held hundreds of MB of memory for a 90 MB model. The weights are read from
`model.safetensors` through a memory map (the word-embedding table's rows are read from
the page cache only for the word pieces met), and the word pieces come from the model's
own `tokenizer.json` through `tokenizers`, the library sentence-transformers uses too.

Supported: what `supports` says yes to, a BERT encoder (`model_type` "bert", absolute
positions, GELU) with mean pooling, as sentence-transformers describes it in
`modules.json` and `1_Pooling/config.json`. Anything else is left to sentence-transformers.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BertEncoder", "UnsupportedModel", "read_safetensors", "supports"]

F32 = npt.NDArray[np.float32]
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}
# Tokens run through the layers at once (see `_Weights.forward`).
_TOKENS_PER_PASS = 4096
# Batches of at most this many tokens run in the calling thread alone (`_Weights.forward`).
_SINGLE_THREAD_TOKENS = 512
_CORES = max(
    1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
# Rows of the feed-forward layer's activations put through GELU at once: a block stays in
# the CPU's cache across GELU's dozen passes (2.5x faster than the whole array at once).
_GELU_ROWS = 64
# Abramowitz and Stegun 7.1.26: erf to within 1.5e-7, below float32's own rounding.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


class UnsupportedModel(ValueError):
    """The model directory holds something this encoder does not run (the message says what)."""


@dataclass(frozen=True, slots=True)
class _Shape:
    hidden: int
    heads: int
    layers: int
    eps: float
    max_positions: int
    max_seq_length: int


def supports(path: Path) -> str | None:
    """None when `path`'s configuration files describe a model this encoder runs; else
    why not, in a few words. The weights and the tokenizer are checked when they load
    (`BertEncoder` raises `UnsupportedModel`)."""
    try:
        _read_shape(path)
    except UnsupportedModel as exc:
        return str(exc)
    return None


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a `.safetensors` file as read-only arrays over a memory map.

    The format is an 8-byte little-endian header length, a JSON header naming each
    tensor's dtype, shape and byte range, then the bytes.
    """
    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    (length,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8 : 8 + length])
    start = 8 + length
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise UnsupportedModel(f"tensor {name} has dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        flat = np.frombuffer(
            mapped,
            dtype=dtype,
            count=(end - begin) // np.dtype(dtype).itemsize,
            offset=start + begin,
        )
        tensors[name] = flat.reshape(entry["shape"])
    return tensors


class BertEncoder:
    """Normalised mean-pooled sentence vectors from a BERT model directory (blocking calls).

    `encode` may run in several threads at once: it keeps no state between calls.
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer  # the only native library besides numpy

        shape = _read_shape(path)
        self.max_seq_length = shape.max_seq_length
        self.dim = shape.hidden
        self._shape = shape
        # One tokenizer, neither truncating nor padding: `offsets` needs a long text's every
        # word piece, and `encode` cuts and wraps the pieces itself.
        try:
            self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # the library raises a bare Exception for a bad file
            raise UnsupportedModel(f"cannot read tokenizer.json: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        wrap = self._tokenizer.encode("").ids  # [CLS] [SEP] for a BERT tokenizer
        if len(wrap) != 2:
            raise UnsupportedModel(f"the tokenizer wraps a text in {len(wrap)} tokens, not 2")
        self._wrap = (wrap[0], wrap[1])
        tensors = read_safetensors(path / "model.safetensors")
        odd = sorted({str(t.dtype) for t in tensors.values()} - {"float32", "int64"})
        if odd:  # torch would compute in that precision, numpy in float32
            raise UnsupportedModel(f"weights are {', '.join(odd)}, not float32")
        self._weights = _Weights(tensors, shape)
        _BLAS_THREADS.warm_up()

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Each word piece's (start, end) in `text`, without [CLS] and [SEP]."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)

    def word_pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads them: at most `max_seq_length` with
        [CLS] and [SEP], the rest dropped (as sentence-transformers truncates)."""
        first, last = self._wrap
        keep = self.max_seq_length - 2
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[first, *e.ids[:keep], last] for e in encoded]

    def encode(self, texts: Sequence[str]) -> F32:
        """One unit-length row per text, in order; the batch is padded to its longest text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        pieces = self.word_pieces(texts)
        longest = max(len(p) for p in pieces)
        ids = np.zeros((len(texts), longest), dtype=np.int64)
        mask = np.zeros((len(texts), longest), dtype=np.float32)
        for row, text_ids in enumerate(pieces):
            ids[row, : len(text_ids)] = text_ids
            mask[row, : len(text_ids)] = 1.0
        with _BLAS_THREADS.single():
            hidden = self._weights.forward(ids, mask)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(
            mask.sum(axis=1, keepdims=True), 1e-9
        )
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled / norms, dtype=np.float32)


class _Layer:
    __slots__ = (
        "ff_in",
        "ff_in_bias",
        "ff_norm",
        "ff_out",
        "ff_out_bias",
        "out",
        "out_bias",
        "out_norm",
        "qkv",
        "qkv_bias",
    )

    def __init__(self, tensors: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        def get(name: str) -> F32:
            return tensors[prefix + name].astype(np.float32, copy=False)

        attention = "attention.self."
        # One product for query, key and value: a (hidden, 3 * hidden) matrix.
        self.qkv = np.ascontiguousarray(
            np.concatenate([get(attention + p + ".weight") for p in ("query", "key", "value")]).T
        )
        self.qkv_bias = np.concatenate(
            [get(attention + p + ".bias") for p in ("query", "key", "value")]
        )
        self.out = get("attention.output.dense.weight").T
        self.out_bias = get("attention.output.dense.bias")
        self.out_norm = (
            get("attention.output.LayerNorm.weight"),
            get("attention.output.LayerNorm.bias"),
        )
        self.ff_in = get("intermediate.dense.weight").T
        self.ff_in_bias = get("intermediate.dense.bias")
        self.ff_out = get("output.dense.weight").T
        self.ff_out_bias = get("output.dense.bias")
        self.ff_norm = (get("output.LayerNorm.weight"), get("output.LayerNorm.bias"))


class _Weights:
    """The model's tensors, arranged for the forward pass."""

    def __init__(self, tensors: dict[str, npt.NDArray[Any]], shape: _Shape) -> None:
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
        try:
            embeddings = prefix + "embeddings."
            self.words: F32 = tensors[embeddings + "word_embeddings.weight"]
            self.positions: F32 = tensors[embeddings + "position_embeddings.weight"]
            self.token_type = tensors[embeddings + "token_type_embeddings.weight"][0].astype(
                np.float32
            )
            self.norm = (
                tensors[embeddings + "LayerNorm.weight"].astype(np.float32),
                tensors[embeddings + "LayerNorm.bias"].astype(np.float32),
            )
            self.layers = [
                _Layer(tensors, f"{prefix}encoder.layer.{n}.") for n in range(shape.layers)
            ]
        except KeyError as exc:
            raise UnsupportedModel(f"model.safetensors has no tensor {exc}") from exc
        self.shape = shape

    def forward(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        """The last layer's hidden states, (batch, tokens, hidden), as BertModel computes them.

        Called with numpy's BLAS on one thread (`_BlasThreads`). A batch of at most
        `_SINGLE_THREAD_TOKENS` tokens runs in the calling thread. A larger one is cut into
        parts of at most `_TOKENS_PER_PASS` tokens between all threads (tens of MB of
        activations, not a GB), run by one thread per core: numpy's element-wise steps
        (GELU, softmax, layer norm) use one core each, and BLAS's own threads would only
        share the matrix products.
        """
        if ids.size <= _SINGLE_THREAD_TOKENS:
            return self._forward(ids, mask)
        # The threads' parts together hold no more activations than one pass did.
        batch = ids.shape[0]
        parts = max(_CORES, -(-ids.size * _CORES // _TOKENS_PER_PASS))
        rows = -(-batch // parts)
        slices = [slice(n, n + rows) for n in range(0, batch, rows)]
        # A part is at least one text: fewer threads when texts are long, so the parts in
        # flight stay within one pass's tokens.
        threads = min(_CORES, len(slices), max(1, _TOKENS_PER_PASS // (rows * ids.shape[1])))
        with ThreadPoolExecutor(threads) as pool:
            hidden = pool.map(lambda part: self._forward(ids[part], mask[part]), slices)
            return np.concatenate(list(hidden))

    def _forward(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        batch, length = ids.shape
        shape = self.shape
        heads, size = shape.heads, shape.hidden // shape.heads
        x: F32 = self.words[ids].astype(np.float32)
        x += self.positions[:length]
        x += self.token_type
        x = _layer_norm(x, *self.norm, shape.eps)
        # Padding gets the most negative float before the softmax, as BertModel does.
        bias = (1.0 - mask) * np.finfo(np.float32).min
        scale = np.float32(1.0 / np.sqrt(size))
        x = x.reshape(batch * length, shape.hidden)  # dense layers: one BLAS call each
        for layer in self.layers:
            qkv = x @ layer.qkv
            qkv += layer.qkv_bias
            context = _attention(qkv.reshape(batch, length, 3, heads, size), bias, scale)
            attended = context.reshape(batch * length, shape.hidden) @ layer.out
            attended += layer.out_bias
            attended += x
            x = _layer_norm(attended, *layer.out_norm, shape.eps)
            inner: F32 = x @ layer.ff_in
            inner += layer.ff_in_bias
            for start in range(0, inner.shape[0], _GELU_ROWS):
                _gelu(inner[start : start + _GELU_ROWS])
            out: F32 = inner @ layer.ff_out
            out += layer.ff_out_bias
            out += x
            x = _layer_norm(out, *layer.ff_norm, shape.eps)
        return x.reshape(batch, length, shape.hidden)


class _BlasThreads:
    """Numpy's BLAS on one thread while batches are encoded (a large batch runs in
    threads of its own instead, `_Weights.forward`).

    OpenBLAS's worker threads spin for a while after each product: for one sentence at
    a time (the server's memory goals) a probe measured several times the encode's own
    CPU with two threads (commit 56bb10d has the figures), and that CPU is the server's
    own cores. The thread count is process-wide, so overlapping batches share one limit
    (a count), put back when the last of them ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._controller: Any = None
        self._limiter: Any = None

    def warm_up(self) -> None:
        """Find numpy's BLAS and run one tiny product on a single thread, as a model
        loads: the first encode otherwise pays for both (threadpoolctl scans the loaded
        libraries; OpenBLAS sets itself up on its first product). Touches none of the
        weights, whose memory map stays out of the process's resident memory until used.
        """
        with self.single():
            np.ones((2, 8), dtype=np.float32) @ np.ones((8, 8), dtype=np.float32)

    @contextmanager
    def single(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                if self._controller is None:  # numpy's BLAS is loaded by now
                    from threadpoolctl import ThreadpoolController

                    self._controller = ThreadpoolController().select(user_api="blas")
                self._limiter = self._controller.limit(limits=1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._limiter.restore_original_limits()


_BLAS_THREADS = _BlasThreads()


def _attention(qkv: F32, bias: F32, scale: np.float32) -> F32:
    """Self-attention of (batch, tokens, 3, heads, size) queries, keys and values."""
    batch, length, _, heads, size = qkv.shape
    query, key, value = qkv.transpose(2, 0, 3, 1, 4)  # each (batch, heads, tokens, size)
    scores: F32 = query @ key.transpose(0, 1, 3, 2)
    scores *= scale
    scores += bias[:, None, None, :]
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    context: F32 = (scores @ value).transpose(0, 2, 1, 3)
    return context.reshape(batch, length, heads * size)


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    """LayerNorm over the last axis; `x` is overwritten."""
    x -= x.mean(axis=-1, keepdims=True)
    variance = np.square(x).mean(axis=-1, keepdims=True)
    variance += np.float32(eps)
    x /= np.sqrt(variance)
    x *= weight
    x += bias
    return x


def _gelu(x: F32) -> F32:
    """GELU with the exact erf (BERT's "gelu"), not the tanh approximation; in place.

    |x| / sqrt(2) is clamped at 4, where erf is 1 in float32: beyond it exp(-z * z)
    would make subnormal floats, which the CPU handles a hundred times slower.
    """
    z = np.abs(x)
    z *= np.float32(1.0 / np.sqrt(2.0))
    np.minimum(z, np.float32(4.0), out=z)
    t = z * np.float32(_ERF_P)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = (np.float32(a) for a in _ERF_A)
    poly = t * a5
    for a in (a4, a3, a2, a1):
        poly += a
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # now 1 - erf(|x| / sqrt(2))
    # 1 + erf(x / sqrt(2)) = 1 + sign(x) * (1 - poly) = 1 + sign(x) - copysign(poly, x)
    np.copysign(poly, x, out=poly)
    sign = np.sign(x)
    sign -= poly
    sign += np.float32(1.0)
    x *= sign
    x *= np.float32(0.5)
    return x


def _read_shape(path: Path) -> _Shape:
    config = _json(path / "config.json")
    if config.get("model_type") != "bert":
        raise UnsupportedModel(f"model_type is {config.get('model_type')!r}, not 'bert'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModel(f"hidden_act is {config.get('hidden_act')!r}, not 'gelu'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedModel("positions are not absolute")
    modules = _json(path / "modules.json") if (path / "modules.json").is_file() else []
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise UnsupportedModel(f"modules are {kinds}, not Transformer, Pooling[, Normalize]")
    pooling = _json(path / modules[1].get("path", "1_Pooling") / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise UnsupportedModel(f"pooling is {modes}, not mean")
    for name in ("tokenizer.json", "model.safetensors"):
        if not (path / name).is_file():
            raise UnsupportedModel(f"no {name}")
    prompts = path / "config_sentence_transformers.json"
    if prompts.is_file() and _json(prompts).get("default_prompt_name"):
        raise UnsupportedModel("a default prompt is set (sentence-transformers prepends it)")
    sentence = path / "sentence_bert_config.json"
    sentence_config = _json(sentence) if sentence.is_file() else {}
    if sentence_config.get("do_lower_case"):
        raise UnsupportedModel("do_lower_case is set (sentence-transformers lowercases itself)")
    max_seq = sentence_config.get("max_seq_length")
    if max_seq is None:  # as sentence-transformers: the tokenizer's limit, within positions
        tokenizer_config = path / "tokenizer_config.json"
        limit = (
            _json(tokenizer_config).get("model_max_length") if tokenizer_config.is_file() else None
        )
        max_seq = limit if isinstance(limit, int) and limit > 0 else None
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        positions = int(config["max_position_embeddings"])
        shape = _Shape(
            hidden=hidden,
            heads=heads,
            layers=int(config["num_hidden_layers"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            max_positions=positions,
            max_seq_length=min(int(max_seq or positions), positions),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedModel(f"config.json lacks a valid {exc}") from exc
    if hidden % heads:
        raise UnsupportedModel("hidden_size is not a multiple of num_attention_heads")
    return shape


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedModel(f"cannot read {path.name}: {exc}") from exc
