"""One run, driven once per server: resumes, takeovers and cancels racing each other
never start it twice, and never lose track of the drive that runs it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import trio

from server._access import LOCAL
from server.ws._protocol import BadFrame
from tests.server.ws_helpers import serving

ENV = {"AUTOAGENT_AGENTS__REQUIRE_APPROVAL": '["math.calculate"]'}  # steps wait for a human


async def until(check: Callable[[], bool]) -> None:
    while True:
        if check():
            return
        await trio.sleep(0.01)


async def test_concurrent_resumes_start_one_drive_and_a_cancel_then_ends_it(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with serving(tmp_path, env=ENV) as served:
            server, orchestrator = served.app, served.orchestrator
            run_id = (await orchestrator.submit("what is 17 * 23 + 4")).run_id  # not started
            refused: list[BadFrame] = []

            async def resume(request_id: int) -> None:
                connection = SimpleNamespace(principal=LOCAL, sessions=set())
                try:
                    await server.resume_run(connection, run_id, request_id)
                except BadFrame as exc:
                    refused.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(resume, 1)
                nursery.start_soon(resume, 2)
            assert [exc.code for exc in refused] == ["conflict"]
            await until(lambda: bool(orchestrator.approvals.pending()))  # waits for a human
            assert run_id in server._active_runs  # the drive that runs it is still known
            connection = SimpleNamespace(principal=LOCAL, sessions=set())
            await server.cancel_run(connection, run_id, 3)
            await until(lambda: not orchestrator.running())
            types = [r.type for r in await served.records() if r.stream == f"run-{run_id}"]
    assert types.count("RunResumed") == 1, types
    assert types[-1] == "RunCancelled", types
