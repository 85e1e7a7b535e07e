"""The simulator as an HTTP service: endpoints, streaming, usage, limits, faults, counts.

Spoken to with plain httpx, so these tests pin the wire format the openai SDK and other
OpenAI clients rely on.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from typing import Any

import httpx
import pytest
import trio

from agents import PromptRepository, plan_messages

from .conftest import TIMEOUT_S, TOOLS, start_simulator

PLAN = plan_messages(PromptRepository(), "what is 17 * 23 + 4", TOOLS)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "autoagent-offline", "messages": PLAN, **extra}


def root(url: str) -> str:
    """The server's root, for the `/_sim/*` test hooks outside `/v1`."""
    return url.removesuffix("/v1")


async def post(url: str, path: str, body: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + path, json=body, headers=headers)


async def get(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url + path)


async def test_models_lists_what_it_serves(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, models=("autoagent-offline", "m2"))
        listed = (await get(url, "/models")).json()
        one = await get(url, "/models/m2")
        missing = await get(url, "/models/nope")
    assert [m["id"] for m in listed["data"]] == ["autoagent-offline", "m2"]
    assert one.json()["id"] == "m2"
    assert missing.status_code == 404


async def test_chat_completion_answers_with_json_and_usage(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        response = await post(
            url, "/chat/completions", chat_body(response_format={"type": "json_object"})
        )
    body = response.json()
    assert response.status_code == 200 and body["object"] == "chat.completion"
    plan = json.loads(body["choices"][0]["message"]["content"])
    assert plan["steps"][0]["parameters"] == {"expression": "17 * 23 + 4"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_streamed_chat_is_sse_ending_with_done_and_usage(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        response = await post(
            url, "/chat/completions", chat_body(stream=True, stream_options={"include_usage": True})
        )
    assert response.headers["content-type"] == "text/event-stream"
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert json.loads(text)["steps"][0]["tool"] == "math.calculate"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_are_unit_vectors_in_float_or_base64(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, embedding_dim=8)
        plain = await post(
            url, "/embeddings", {"model": "text-embedding-3-small", "input": ["a b", "c"]}
        )
        packed = await post(
            url,
            "/embeddings",
            {
                "model": "text-embedding-3-small",
                "input": "a b",
                "encoding_format": "base64",
                "dimensions": 8,
            },
        )
    data = plain.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert sum(x * x for x in data[0]["embedding"]) == pytest.approx(1.0)
    decoded = struct.unpack("<8f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert decoded == pytest.approx(data[0]["embedding"], abs=1e-6)
    assert plain.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "'input' must hold 1 to 2048 items, got 0"),
        (["x"] * 2049, "'input' must hold 1 to 2048 items, got 2049"),
        (["ok", ""], "'input[1]' must not be an empty string"),
        ([[1, 2, 3]], "'input' must be a string or an array of strings"),
        (["x" * 40_000], "maximum context length is 8192 tokens"),
    ],
    ids=["none", "too-many", "empty-string", "token-arrays", "too-long"],
)
async def test_embeddings_validate_inputs_as_the_api_does(
    nursery: trio.Nursery, inputs: Any, message: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        response = await post(
            url, "/embeddings", {"model": "text-embedding-3-small", "input": inputs}
        )
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


async def test_unknown_model_is_404_model_not_found(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        response = await post(url, "/chat/completions", {"model": "gpt-9", "messages": PLAN})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("given", [None, "Bearer wrong"], ids=["missing", "wrong"])
async def test_api_key_is_required_when_configured(
    nursery: trio.Nursery, given: str | None
) -> None:
    headers = {"authorization": given} if given else {}
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, api_key="sk-right-key")
        response = await post(url, "/chat/completions", chat_body(), **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_bad_requests_are_400(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery)
        no_messages = await post(url, "/chat/completions", {"model": "autoagent-offline"})
        async with httpx.AsyncClient(timeout=10) as client:
            not_json = await client.post(url + "/chat/completions", content=b"{nope")
        unknown = await post(url, "/nowhere", {})
    assert (no_messages.status_code, not_json.status_code, unknown.status_code) == (400, 400, 404)


async def test_stats_count_requests_per_purpose_and_connections(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        simulator, url = await start_simulator(nursery)
        usages = []
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(3):
                reply = await client.post(url + "/chat/completions", json=chat_body())
                usages.append(("plan", reply.json()["usage"]["total_tokens"]))
            reply = await client.post(
                url + "/chat/completions", json=chat_body(), headers={"X-Autoagent-Purpose": "step"}
            )
            usages.append(("step", reply.json()["usage"]["total_tokens"]))
        stats = (await get(root(url), "/_sim/stats")).json()
    assert stats["by_purpose"] == {"plan": 3, "step": 1}
    assert stats["tokens_by_purpose"] == {
        "plan": sum(n for purpose, n in usages if purpose == "plan"),
        "step": sum(n for purpose, n in usages if purpose == "step"),
    }
    assert sum(stats["tokens_by_purpose"].values()) == (
        stats["prompt_tokens"] + stats["completion_tokens"]
    )
    assert stats["requests"] == 4 and stats["by_status"] == {"200": 4}
    assert stats["connections_opened"] == 2  # one pooled client, one for the stats
    assert simulator.statistics().by_purpose == stats["by_purpose"]


async def test_reset_zeroes_the_counts(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        simulator, url = await start_simulator(nursery)
        await post(url, "/chat/completions", chat_body())
        await post(root(url), "/_sim/reset", {})
    assert simulator.statistics().requests == 0


async def test_own_rate_limit_answers_429_with_openai_headers(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, rpm_limit=60, burst_s=1.0)
        first = await post(url, "/chat/completions", chat_body())
        second = await post(url, "/chat/completions", chat_body())
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "60"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(second.headers["retry-after-ms"]) <= 1000
    assert second.headers["retry-after"] == "1"
    assert second.headers["x-ratelimit-reset-requests"].endswith("ms")


@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("500", 500)], ids=["429", "500"])
async def test_injected_status_faults(nursery: trio.Nursery, fault: str, status: int) -> None:
    with trio.fail_after(TIMEOUT_S):
        simulator, url = await start_simulator(
            nursery, fault_rate=1.0, faults=(fault,), retry_after_s=2.0, time_scale=0.5
        )
        response = await post(url, "/chat/completions", chat_body())
    assert response.status_code == status
    assert simulator.statistics().faults == {fault: 1}
    if status == 429:
        assert response.headers["retry-after-ms"] == "1000"


async def test_injected_bad_json_breaks_the_body(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, fault_rate=1.0, faults=("bad_json",), seed=3)
        bodies = [(await post(url, "/chat/completions", chat_body())).text for _ in range(6)]
    broken = 0
    for text in bodies:
        try:
            json.loads(json.loads(text)["choices"][0]["message"]["content"])
        except ValueError:
            broken += 1
    assert broken == 6


async def test_injected_bad_json_cuts_a_stream_short(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, fault_rate=1.0, faults=("bad_json",))
        with pytest.raises(httpx.RemoteProtocolError):
            await post(url, "/chat/completions", chat_body(stream=True))


async def test_injected_slow_response_outlasts_the_timeout(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, fault_rate=1.0, faults=("slow",), slow_response_s=5)
        async with httpx.AsyncClient(timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(url + "/chat/completions", json=chat_body())


async def test_realistic_latency_is_scaled_by_time_scale(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, url = await start_simulator(nursery, latency_profile="realistic", time_scale=0.1, seed=1)
        start = trio.current_time()
        await post(url, "/chat/completions", chat_body())  # a plan: median 1.5 s x 0.1
        elapsed = trio.current_time() - start
    assert 0.05 < elapsed < 0.6


def test_options_are_checked() -> None:
    from agents import SimulatorOptions

    with pytest.raises(ValueError, match=re.escape("fault rate must be between 0 and 1, got 1.5")):
        SimulatorOptions(fault_rate=1.5)
    with pytest.raises(ValueError, match="latency profile must be one of"):
        SimulatorOptions(latency_profile="slow")


def _realistic(seed: int = 3, time_scale: float = 1.0) -> Any:
    from agents.offline._simulator import Simulator, SimulatorOptions

    return Simulator(
        SimulatorOptions(latency_profile="realistic", time_scale=time_scale, seed=seed)
    )


def test_time_to_first_token_grows_with_the_prompt() -> None:
    from agents.offline._simulator import REALISTIC

    short, _ = _realistic()._chat_latency(100)
    long, _ = _realistic()._chat_latency(10_100)  # same seed: the same spread drawn
    spread = short / REALISTIC.first_token(100)
    assert long - short == pytest.approx(10_000 / REALISTIC.prefill_tokens_per_s * spread)


def test_reply_time_is_charged_per_output_token_and_scaled() -> None:
    from agents.offline._simulator import REALISTIC

    first, per_token = _realistic(time_scale=0.5)._chat_latency(0)
    nominal = 0.5 / REALISTIC.output_tokens_per_s
    assert nominal / 2 < per_token < nominal * 2
    assert first > 0
    assert _realistic(time_scale=0.0)._chat_latency(4_000) == (0.0, 0.0)


def test_embedding_latency_grows_with_the_input_tokens() -> None:
    one = _realistic()._embedding_latency(10)
    many = _realistic()._embedding_latency(64 * 500)
    assert many > one


def test_streamed_chunks_are_paced_by_their_tokens() -> None:
    from agents.offline._simulator import _Reply

    simulator = _realistic()
    reply = _Reply("m", "x" * 160, (10, 40), (), False, False)
    response = simulator._streamed(reply, True, 0.3, 0.01)
    delays = [delay for delay, _ in response.chunks or ()]
    assert delays[0] == 0.3  # the role chunk: time to first token
    assert delays[1:11] == [pytest.approx(0.04)] * 10  # ten 16-character pieces, 4 tokens each
    assert all(delay == 0.0 for delay in delays[11:])  # finish, usage, [DONE]


class _SlowSocket:
    """A stream whose every write takes 5 ms of (virtual) time, and that notes when."""

    def __init__(self) -> None:
        self.written_at: list[float] = []

    async def send_all(self, data: bytes) -> None:
        await trio.sleep(0.005)
        self.written_at.append(trio.current_time())


async def test_streamed_chunks_keep_the_models_pace_whatever_the_writes_take(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Chunks are due at times counted from the start: ten writes of 5 ms each do not
    make a 0.3 s + 10 x 0.04 s reply 50 ms longer (a sleep per chunk did)."""
    import h11

    from agents.offline._http import _send_chunks

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    chunks = ((0.3, b"role"), *((0.04, b"piece") for _ in range(10)), (0.0, b"[DONE]"))
    socket = _SlowSocket()
    start = trio.current_time()
    assert await _send_chunks(socket, conn, chunks, None)  # type: ignore[arg-type]
    # Each write goes out when its piece is due (the role chunk's at 0.3 s) and takes
    # 5 ms; the last piece goes out with [DONE] in the final write, at 0.7 s.
    due = [0.3 + 0.04 * n + 0.005 for n in range(11)]
    assert [t - start for t in socket.written_at] == pytest.approx(due)
