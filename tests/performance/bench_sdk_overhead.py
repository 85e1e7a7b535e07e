"""CPU of one chat request through the openai SDK, with and without its typed transform.

The OpenAI provider sends chat requests with the SDK's `post` and a body of plain JSON
data; `chat.completions.create` first walks the body against the SDK's TypedDicts. Both
paths run here against a mock transport (no network, no server), with a plan-sized
prompt (16,000 characters), and the process CPU per call is reported for each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import trio
from openai._constants import RAW_RESPONSE_HEADER
from openai.types.chat import ChatCompletion

from ._cli import finish, make_parser, result_header
from ._common import Table

RESULTS = Path(__file__).resolve().parent / "results" / "sdk_overhead.json"
REPLY = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"steps": []}'},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 4000, "completion_tokens": 5, "total_tokens": 4005},
}
MESSAGES: list[Any] = [
    {"role": "system", "content": "x" * 12_000},
    {"role": "user", "content": "y" * 4_000},
]


def _reply(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=REPLY)


async def measure(calls: int) -> dict[str, Any]:
    transport = httpx2.MockTransport(_reply)
    client = openai.AsyncOpenAI(
        api_key="sk-bench",
        base_url="http://bench.invalid/v1",
        http_client=httpx2.AsyncClient(transport=transport),
        max_retries=0,
    )
    body = {"model": "m", "messages": MESSAGES, "response_format": {"type": "json_object"}}
    headers = {"x-autoagent-purpose": "plan", RAW_RESPONSE_HEADER: "true"}
    paths: dict[str, Any] = {
        "chat.completions.with_raw_response.create (typed transform)": (
            lambda: client.chat.completions.with_raw_response.create(
                model="m",
                messages=MESSAGES,
                response_format={"type": "json_object"},
                extra_headers={"x-autoagent-purpose": "plan"},
            )
        ),
        "client.post, plain JSON body (the provider's path)": (
            lambda: client.post(
                "/chat/completions", body=body, cast_to=ChatCompletion, options={"headers": headers}
            )
        ),
    }
    result: dict[str, Any] = {"calls": calls, "prompt_chars": 16_000, "cpu_ms_per_call": {}}
    for name, call in paths.items():
        for _ in range(calls // 10):  # warm up
            (await call()).parse()
        started = time.process_time()
        for _ in range(calls):
            (await call()).parse()
        result["cpu_ms_per_call"][name] = (time.process_time() - started) / calls * 1000
    await client.close()
    return result


def report(result: dict[str, Any]) -> list[Table]:
    rows = [[name, f"{ms:.3f}"] for name, ms in result["cpu_ms_per_call"].items()]
    return [Table(f"openai SDK, one chat call, {result['calls']} calls", ["path", "CPU ms"], rows)]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__, RESULTS)
    parser.add_argument("--calls", type=int, default=2000, help="calls per path")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = result_header("bench_sdk_overhead", args.quick, argv, Path.cwd())
    result |= trio.run(measure, 100 if args.quick else args.calls)
    finish(result, args.out, report, seconds=time.perf_counter() - started, markdown=args.markdown)


if __name__ == "__main__":
    main()
