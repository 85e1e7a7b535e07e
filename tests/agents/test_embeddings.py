"""Embedders: one conformance suite over `LocalEmbedder` and `OpenAIEmbedder`, then each one's own.

The conformance cases take the `embedder` fixture, made by `open_embedder` for each
backend: "local" is the real all-MiniLM-L6-v2 model, loaded once per test session by a
sync session fixture (before any Trio run starts); "openai" is the real openai SDK
against the simulator (agents/simulator.py) started on port 0 in the test's nursery.

The OpenAI-only cases drive the SDK against `FakeEndpoint`, a scripted `/v1/embeddings`
behind `httpx2.MockTransport`, to fail batches on demand and record every request.
Every test that does I/O is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from agents.embeddings import Embedder, open_embedder
from agents.embeddings._embedder import batch_ranges, combine_chunks, l2_normalise
from agents.embeddings._local import LocalEmbedder
from agents.embeddings._openai import (
    BYTES_PER_TOKEN,
    MAX_INPUTS_PER_REQUEST,
    OpenAIEmbedder,
    OpenAIEmbedderOptions,
    estimate_tokens,
    split_text,
)
from agents.errors import (
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingRequestFailed,
    InvalidEmbeddingInput,
    InvalidEmbeddingResponse,
    UnknownEmbeddingProvider,
)
from agents.offline._simulator import SimulatorOptions, serve_simulator
from tests.performance import bench_embeddings

# Bounds on one test's I/O; the model load is outside them (session fixture).
TIMEOUT_S = 30
SIM_DIM = 256
PARAPHRASE = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = "The new movie is awesome."
# About 43 KB: over the local model's 256 word pieces and over OpenAI's 8,192 tokens
# per input (the simulator rejects an input over 8,192 tokens, as the API does).
LONG_TEXT = "The quarterly report shows revenue growth in Europe and Asia. " * 700


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_model() -> None:
    """Load the local model into the process cache once per session, outside any test."""
    trio.run(LocalEmbedder().warm_up)


@pytest.fixture(params=["local", "openai"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "local":
        request.getfixturevalue("local_model")
    return str(request.param)


@pytest.fixture
async def simulator_url(nursery: trio.Nursery) -> str:
    port = await nursery.start(serve_simulator, SimulatorOptions(embedding_dim=SIM_DIM))
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def embedder(backend: str, nursery: trio.Nursery) -> AsyncIterator[Embedder]:
    """An embedder of this test's backend, 8 texts per batch, opened (and warmed up)."""
    async with AsyncExitStack() as stack:
        with trio.fail_after(TIMEOUT_S):
            if backend == "local":
                opened = open_embedder("local", batch_size=8)
            else:
                port = await nursery.start(serve_simulator, SimulatorOptions(embedding_dim=SIM_DIM))
                options = OpenAIEmbedderOptions(
                    base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0
                )
                opened = open_embedder("openai", openai=options, batch_size=8)
            embedder = await stack.enter_async_context(opened)
        yield embedder


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.dot(a, b))


# --- conformance: every embedder ------------------------------------------------------


async def test_embed_returns_one_float32_row_per_text(embedder: Embedder) -> None:
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed(["alpha beta", "gamma delta", "epsilon"])
    assert vectors.shape == (3, embedder.dim)
    assert vectors.dtype == np.float32


async def test_embed_rows_have_unit_length(embedder: Embedder) -> None:
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed([*PARAPHRASE, UNRELATED, "x"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_embed_is_deterministic_and_independent_of_batching(embedder: Embedder) -> None:
    texts = [f"note {i}: the meeting moved to room {i * 7}" for i in range(20)]
    with trio.fail_after(TIMEOUT_S):
        first = await embedder.embed(texts)
        again = await embedder.embed(texts)
        alone = await embedder.embed(texts[5:6])
    np.testing.assert_allclose(first, again, atol=1e-6)
    np.testing.assert_allclose(first[5], alone[0], atol=1e-4)


async def test_embed_keeps_input_order(embedder: Embedder) -> None:
    texts = ["apples and pears", "stock prices fell", "a rainy afternoon"]
    with trio.fail_after(TIMEOUT_S):
        forward = await embedder.embed(texts)
        backward = await embedder.embed(texts[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-4)


async def test_embed_of_no_texts_is_an_empty_array_and_no_request(embedder: Embedder) -> None:
    before = embedder.statistics()
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed([])
    assert vectors.shape == (0, embedder.dim)
    assert vectors.dtype == np.float32
    assert embedder.statistics() == before


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        pytest.param(
            ["ok", ""], "cannot embed texts[1]: empty or whitespace-only text", id="empty"
        ),
        pytest.param([" \n\t"], "cannot embed texts[0]: empty or whitespace-only text", id="blank"),
        pytest.param(["ok", None], "cannot embed texts[1]: expected str, got NoneType", id="none"),
        pytest.param([3], "cannot embed texts[0]: expected str, got int", id="int"),
        pytest.param([b"raw"], "cannot embed texts[0]: expected str, got bytes", id="bytes"),
        pytest.param(
            "one string",
            "cannot embed texts[-1]: expected a sequence of str, got a single str or bytes",
            id="bare-str",
        ),
    ],
)
async def test_embed_refuses_bad_input_before_any_request(
    embedder: Embedder, texts: Any, message: str
) -> None:
    before = embedder.statistics()
    with trio.fail_after(TIMEOUT_S), pytest.raises(InvalidEmbeddingInput) as caught:
        await embedder.embed(texts)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)
    assert embedder.statistics() == before


async def test_long_text_is_chunked_averaged_and_renormalised(embedder: Embedder) -> None:
    before = embedder.statistics()
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed([LONG_TEXT, UNRELATED])
        sentence = await embedder.embed([LONG_TEXT.split(". ")[0] + "."])
    after = embedder.statistics()
    assert vectors.shape == (2, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert after.chunks - before.chunks > 1 + 2  # the long text became several chunks
    assert after.inputs - before.inputs == 3
    # A sentence repeated means about what the sentence means (measured: 0.82 local,
    # ~1 simulator), and nothing like an unrelated one (-0.10 local, 0.06 simulator).
    assert cosine(vectors[0], sentence[0]) > 0.7
    assert cosine(vectors[0], vectors[1]) < 0.3


async def test_statistics_count_inputs_and_requests(embedder: Embedder) -> None:
    before = embedder.statistics()
    with trio.fail_after(TIMEOUT_S):
        await embedder.embed([f"text number {i}" for i in range(20)])
    after = embedder.statistics()
    assert after.inputs - before.inputs == 20
    assert after.requests - before.requests == 3  # batch_size=8: 8 + 8 + 4


async def test_aclose_twice_is_harmless(embedder: Embedder) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedder.aclose()
        await embedder.aclose()


# --- LocalEmbedder ----------------------------------------------------------------------


@pytest.mark.usefixtures("local_model")
async def test_local_paraphrase_is_closer_than_unrelated_text() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_embedder("local") as embedder:
            a, b, c = await embedder.embed([*PARAPHRASE, UNRELATED])
    assert embedder.dim == 384
    assert cosine(a, b) > 0.5
    assert cosine(a, c) < 0.2
    assert cosine(a, b) - cosine(a, c) > 0.4


@pytest.mark.usefixtures("local_model")
async def test_local_model_is_loaded_once_per_process() -> None:
    with trio.fail_after(TIMEOUT_S):
        first, second = LocalEmbedder(), LocalEmbedder(batch_size=2)
        await first.warm_up()
        await second.warm_up()
    assert first._loaded is second._loaded


@pytest.mark.usefixtures("local_model")
async def test_local_without_batching_encodes_one_text_per_call() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_embedder("local", batch_embeddings=False) as embedder:
            await embedder.embed(["one", "two", "three"])
    assert embedder.statistics().requests == 3


@pytest.mark.usefixtures("local_model")
async def test_local_unknown_model_names_the_setting() -> None:
    with trio.fail_after(TIMEOUT_S), pytest.raises(EmbedderUnavailable) as caught:
        await LocalEmbedder(model="no-such-model").warm_up()
    assert "unknown local embedding model 'no-such-model' (embeddings.model)" in str(caught.value)


def test_local_dim_before_loading_is_a_clear_error() -> None:
    with pytest.raises(EmbeddingError, match=r"await warm_up\(\) first"):
        _ = LocalEmbedder(model="not-loaded-yet").dim


def test_local_rejects_a_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        LocalEmbedder(batch_size=0)


# --- factory ----------------------------------------------------------------------------


async def test_open_embedder_refuses_an_unknown_provider() -> None:
    with trio.fail_after(TIMEOUT_S), pytest.raises(UnknownEmbeddingProvider) as caught:
        async with open_embedder("cohere"):  # type: ignore[arg-type]
            pass
    assert str(caught.value) == (
        "unknown embeddings provider 'cohere' (embeddings.provider); expected one of local, openai"
    )


async def test_open_embedder_openai_reports_an_unknown_model_at_start(simulator_url: str) -> None:
    options = OpenAIEmbedderOptions(base_url=simulator_url, api_key="k", model="nope")
    with trio.fail_after(TIMEOUT_S), pytest.raises(EmbedderUnavailable) as caught:
        async with open_embedder("openai", openai=options):
            pass
    assert "does not serve model 'nope' (embeddings.model)" in str(caught.value)


async def test_open_embedder_openai_learns_the_vector_size_from_a_probe(
    simulator_url: str,
) -> None:
    options = OpenAIEmbedderOptions(base_url=simulator_url, api_key="k", max_retries=0)
    with trio.fail_after(TIMEOUT_S):
        async with open_embedder("openai", openai=options) as embedder:
            assert embedder.dim == SIM_DIM  # not 1536: the server decides
            assert embedder.statistics().requests == 1


async def test_openai_sends_dimensions_when_set(simulator_url: str) -> None:
    options = OpenAIEmbedderOptions(base_url=simulator_url, api_key="k", dimensions=64)
    with trio.fail_after(TIMEOUT_S):
        async with OpenAIEmbedder(options) as embedder:
            vectors = await embedder.embed(["sized"])
    assert vectors.shape == (1, 64)
    assert embedder.statistics().requests == 1  # no probe: the size was given


async def test_openai_unreachable_endpoint_fails_without_splitting() -> None:
    with trio.socket.socket() as sock:  # a port that refuses: bound, never listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        options = OpenAIEmbedderOptions(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, dimensions=8
        )
        with trio.fail_after(TIMEOUT_S), pytest.raises(EmbedderUnavailable) as caught:
            async with OpenAIEmbedder(options) as embedder:
                await embedder.embed(["a", "b", "c", "d"])
    assert "cannot reach the embeddings endpoint" in str(caught.value)
    assert embedder.statistics().requests == 1


# --- OpenAIEmbedder against a scripted endpoint ----------------------------------------


class FakeEndpoint:
    """A scripted `/v1/embeddings`: hashed vectors; failures by batch size or input."""

    def __init__(
        self,
        *,
        dim: int = 8,
        fail_over: int | None = None,
        poison: Sequence[str] = (),
        status: int = 400,
        always: int | None = None,
        garble_over: int | None = None,
        fail_longer_than: int | None = None,
    ) -> None:
        self.dim = dim
        self.fail_over = fail_over
        self.poison = set(poison)
        self.status = status
        self.always = always
        self.garble_over = garble_over
        self.fail_longer_than = fail_longer_than
        self.batches: list[list[str]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        inputs: list[str] = body["input"]
        self.batches.append(inputs)
        if self.always is not None:
            return _error(self.always, f"scripted {self.always}")
        too_long = self.fail_longer_than is not None and (
            max(map(len, inputs)) > self.fail_longer_than
        )
        if (self.fail_over is not None and len(inputs) > self.fail_over) or (
            self.poison & set(inputs) or too_long
        ):
            return _error(self.status, "scripted failure")
        if self.garble_over is not None and len(inputs) > self.garble_over:
            inputs = inputs[:-1]  # one vector short
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(t, self.dim, body)}
            for i, t in enumerate(inputs)
        ]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return httpx2.Response(
            200, json={"object": "list", "data": data, "model": body["model"], "usage": usage}
        )


def fake_vector(text: str, dim: int, body: dict[str, Any]) -> Any:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    vector = np.random.default_rng(seed).standard_normal(dim).astype("<f4")
    if body.get("encoding_format") == "base64":
        return base64.b64encode(vector.tobytes()).decode()
    return vector.tolist()


def _error(status: int, message: str) -> httpx2.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return httpx2.Response(status, json={"error": error})


@pytest.fixture
async def fake_client() -> AsyncIterator[Callable[[FakeEndpoint], openai.AsyncOpenAI]]:
    """`make(endpoint)`: an SDK client whose transport is `endpoint`; all closed after."""
    clients: list[openai.AsyncOpenAI] = []

    def make(endpoint: FakeEndpoint) -> openai.AsyncOpenAI:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(endpoint))
        client = openai.AsyncOpenAI(
            base_url="http://fake.test/v1", api_key="k", max_retries=0, http_client=http
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def fake_embedder(
    make: Callable[[FakeEndpoint], openai.AsyncOpenAI], endpoint: FakeEndpoint, **options: Any
) -> OpenAIEmbedder:
    settings = OpenAIEmbedderOptions(model="fake", dimensions=endpoint.dim, **options)
    return OpenAIEmbedder(settings, client=make(endpoint))


async def test_openai_batches_many_inputs_per_request(fake_client: Any) -> None:
    endpoint = FakeEndpoint()
    embedder = fake_embedder(fake_client, endpoint)
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed([f"doc {i}" for i in range(5000)])
    assert vectors.shape == (5000, 8)
    assert sorted(len(batch) for batch in endpoint.batches) == [904, 2048, 2048]
    assert embedder.statistics().requests == 3


async def test_openai_without_batching_sends_one_request_per_input(fake_client: Any) -> None:
    endpoint = FakeEndpoint()
    embedder = fake_embedder(fake_client, endpoint, batch_embeddings=False)
    with trio.fail_after(TIMEOUT_S):
        batched = await fake_embedder(fake_client, FakeEndpoint()).embed(["a", "b", "c"])
        single = await embedder.embed(["a", "b", "c"])
    assert sorted(endpoint.batches) == [["a"], ["b"], ["c"]]
    np.testing.assert_allclose(single, batched, atol=1e-6)


async def test_openai_keeps_each_request_within_the_token_budget(fake_client: Any) -> None:
    endpoint = FakeEndpoint()
    embedder = fake_embedder(
        fake_client,
        endpoint,
        max_tokens_per_input=1000,
        max_tokens_per_request=1000,
        max_concurrent_requests=1,
    )
    texts = [f"{i:03d} " + "x" * 596 for i in range(30)]  # 200 estimated tokens each
    with trio.fail_after(TIMEOUT_S):
        await embedder.embed(texts)
    assert endpoint.batches == [texts[i : i + 5] for i in range(0, 30, 5)]


async def test_openai_chunks_an_input_over_the_token_limit(fake_client: Any) -> None:
    endpoint = FakeEndpoint()
    embedder = fake_embedder(fake_client, endpoint)
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed(["short", LONG_TEXT])
    sent = [t for batch in endpoint.batches for t in batch]
    assert len(sent) > 2
    assert all(estimate_tokens(t) <= 8192 for t in sent)
    assert all(t.strip() for t in sent)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_openai_splits_a_failing_batch_in_halves(fake_client: Any) -> None:
    endpoint = FakeEndpoint(fail_over=4)
    embedder = fake_embedder(fake_client, endpoint, max_concurrent_requests=1)
    texts = [f"doc {i}" for i in range(16)]
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed(texts)
        expected = await fake_embedder(fake_client, FakeEndpoint()).embed(texts)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert [len(batch) for batch in endpoint.batches] == [16, 8, 4, 4, 8, 4, 4]
    stats = embedder.statistics()
    assert (stats.requests, stats.splits, stats.failures) == (7, 3, 3)


@pytest.mark.parametrize("status", [400, 413, 422, 500, 503])
async def test_openai_split_reaches_the_one_bad_input(fake_client: Any, status: int) -> None:
    endpoint = FakeEndpoint(poison=["bad"], status=status)
    embedder = fake_embedder(fake_client, endpoint, max_concurrent_requests=1)
    texts = ["a", "b", "c", "bad", "e"]
    with trio.fail_after(TIMEOUT_S), pytest.raises(EmbeddingRequestFailed) as caught:
        await embedder.embed(texts)
    assert (caught.value.status_code, caught.value.index) == (status, 3)
    assert str(caught.value).startswith("embedding request for texts[3] failed: ")
    assert endpoint.batches[-1] == ["bad"]


async def test_openai_failing_chunk_names_the_text_it_came_from(fake_client: Any) -> None:
    endpoint = FakeEndpoint(fail_longer_than=1000)
    embedder = fake_embedder(fake_client, endpoint, max_concurrent_requests=1)
    with trio.fail_after(TIMEOUT_S), pytest.raises(EmbeddingRequestFailed) as caught:
        await embedder.embed(["a", "b", LONG_TEXT, "d"])
    assert caught.value.index == 2
    assert str(caught.value).startswith("embedding request for texts[2] failed: ")


async def test_openai_splits_when_the_answer_is_short_of_vectors(fake_client: Any) -> None:
    endpoint = FakeEndpoint(garble_over=2)
    embedder = fake_embedder(fake_client, endpoint, max_concurrent_requests=1)
    with trio.fail_after(TIMEOUT_S):
        vectors = await embedder.embed(["a", "b", "c", "d"])
    assert vectors.shape == (4, 8)
    assert embedder.statistics().splits == 1


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        pytest.param(401, EmbedderUnavailable, "refused the API key (401)", id="401"),
        pytest.param(403, EmbedderUnavailable, "refused the API key (403)", id="403"),
        pytest.param(404, EmbedderUnavailable, "does not serve model 'fake'", id="404"),
        pytest.param(429, EmbeddingRequestFailed, "still rate limiting after 0 retries", id="429"),
    ],
)
async def test_openai_errors_no_split_can_cure_fail_at_once(
    fake_client: Any, status: int, error: type[Exception], text: str
) -> None:
    endpoint = FakeEndpoint(always=status)
    embedder = fake_embedder(fake_client, endpoint)
    with trio.fail_after(TIMEOUT_S), pytest.raises(error) as caught:
        await embedder.embed([f"doc {i}" for i in range(10)])
    assert text in str(caught.value)
    assert len(endpoint.batches) == 1
    assert embedder.statistics().splits == 0


async def test_openai_vectors_of_the_wrong_size_are_refused(fake_client: Any) -> None:
    endpoint = FakeEndpoint(dim=5)
    embedder = OpenAIEmbedder(
        OpenAIEmbedderOptions(model="fake", dimensions=8), client=fake_client(endpoint)
    )
    with trio.fail_after(TIMEOUT_S), pytest.raises(InvalidEmbeddingResponse) as caught:
        await embedder.embed(["a", "b"])
    assert "expected 8-d vectors from 'fake', got lengths [5]" in str(caught.value)


async def test_openai_accepts_float_lists(fake_client: Any) -> None:
    endpoint = FakeEndpoint()
    embedder = fake_embedder(fake_client, endpoint, encoding_format="float")
    with trio.fail_after(TIMEOUT_S):
        as_floats = await embedder.embed(["a", "b"])
        as_base64 = await fake_embedder(fake_client, FakeEndpoint()).embed(["a", "b"])
    np.testing.assert_allclose(as_floats, as_base64, atol=1e-6)


async def test_openai_leaves_a_passed_client_open(fake_client: Any) -> None:
    client = fake_client(FakeEndpoint())
    embedder = OpenAIEmbedder(OpenAIEmbedderOptions(model="fake", dimensions=8), client=client)
    with trio.fail_after(TIMEOUT_S):
        await embedder.aclose()
    assert not client.is_closed()


def test_openai_dim_of_an_unknown_model_needs_a_probe() -> None:
    embedder = OpenAIEmbedder(OpenAIEmbedderOptions(model="mystery", api_key="k"))
    with pytest.raises(EmbeddingError, match=r"await warm_up\(\) first, or set dimensions"):
        _ = embedder.dim
    assert OpenAIEmbedder(OpenAIEmbedderOptions(api_key="k")).dim == 1536


def test_openai_without_a_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbedderUnavailable, match="cannot set up the embeddings client"):
        OpenAIEmbedder(OpenAIEmbedderOptions())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"batch_size": 0}, "batch_size must be between 1 and 2048, got 0", id="bs0"),
        pytest.param(
            {"batch_size": MAX_INPUTS_PER_REQUEST + 1},
            "batch_size must be between 1 and 2048, got 2049",
            id="bs-over",
        ),
        pytest.param({"timeout": 0}, "timeout must be > 0 seconds, got 0", id="timeout"),
        pytest.param({"model": ""}, "model must be a non-empty string", id="model"),
        pytest.param({"dimensions": 0}, "dimensions must be >= 1 or None, got 0", id="dim"),
    ],
)
def test_openai_options_are_checked_up_front(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        OpenAIEmbedderOptions(**options)
    assert str(caught.value).startswith(message)


# --- helpers --------------------------------------------------------------------------


def test_estimate_tokens_errs_on_the_safe_side() -> None:
    assert estimate_tokens("a") == 1
    assert estimate_tokens("word " * 300) == 500  # 1,500 bytes; tiktoken says ~300
    assert estimate_tokens("日本語") == 3  # 9 UTF-8 bytes


@given(st.text(min_size=1, max_size=400), st.integers(min_value=2, max_value=40))
def test_split_text_pieces_fit_and_rejoin(text: str, max_tokens: int) -> None:
    pieces = split_text(text, max_tokens)
    assert all(len(p.encode()) <= max_tokens * BYTES_PER_TOKEN for p in pieces)
    if len(text.encode()) <= max_tokens * BYTES_PER_TOKEN:
        assert pieces == [text]
    else:
        assert "".join(pieces) == text.rstrip()


def test_split_text_cuts_at_whitespace() -> None:
    assert split_text("aaa bbb ccc ddd", 3) == ["aaa bbb", " ccc ddd"]


def test_batch_ranges_respect_count_and_cost() -> None:
    assert batch_ranges([1] * 5, max_inputs=2, max_cost=100) == [
        range(0, 2),
        range(2, 4),
        range(4, 5),
    ]
    assert batch_ranges([3, 3, 3, 9, 1], max_inputs=10, max_cost=6) == [
        range(0, 2),
        range(2, 3),
        range(3, 4),
        range(4, 5),
    ]
    assert batch_ranges([], max_inputs=1, max_cost=1) == []


def test_combine_chunks_takes_the_weighted_mean_renormalised() -> None:
    chunks = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    combined = combine_chunks(chunks, owners=[0, 0, 1], weights=[3.0, 1.0, 1.0], count=2)
    np.testing.assert_allclose(combined[0], np.array([3.0, 1.0]) / np.sqrt(10), atol=1e-6)
    np.testing.assert_allclose(combined[1], [0.0, 1.0], atol=1e-6)


def test_l2_normalise_refuses_a_zero_vector() -> None:
    with pytest.raises(InvalidEmbeddingResponse, match="vector 1 is zero or not finite"):
        l2_normalise(np.array([[1.0, 0.0], [0.0, 0.0]]))


# --- the benchmark still runs ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("local_model")
def test_bench_embeddings_quick_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert bench_embeddings.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    remote, local = result["remote"], result["local"]
    assert [(r["requests"], r["requests_seen_by_simulator"]) for r in remote["runs"]] == [
        (2, 2),
        (2, 2),
        (100, 100),
        (100, 100),
    ]
    assert remote["max_abs_difference_batched_vs_single"] < 1e-6
    assert [(r["runtime"], r["row"]) for r in local["runtimes"]] == [
        ("numpy", "default"),
        ("torch", "diagnostic"),
    ]
    for run in local["runtimes"]:
        assert [r["batch_size"] for r in run["sentences"]] == [1, 64]
        rows = run["sentences"] + run["documents"]
        assert all(row["per_s"] > 0 and row["per_cpu_s"] > 0 for row in rows)
