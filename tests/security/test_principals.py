"""Principals and roles, tried as a hostile client would over real sockets: a `user`
principal may follow and act on only its own sessions, runs and memory; an `admin`
on everything; events record principals' names and never a token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from events import FileKeyStore, LmdbEventLog, Sealer
from server.app import server_principals
from server.errors import ConfigError
from tests.security.principal_server import (
    ANA_TOKEN,
    BOB_TOKEN,
    ROOT_TOKEN,
    TIMEOUT_S,
    TOKEN_ENV,
    ask,
    every_file,
    principal_config,
    running_server,
)
from tests.server.ws_helpers import Client

GOAL = "what is 6 * 7"


async def expect_forbidden(client: Client, frame: dict[str, object]) -> None:
    reply = await client.request(frame)
    assert reply["type"] == "error" and reply["code"] == "forbidden", reply
    assert reply["id"] == frame["id"]
    assert ANA_TOKEN not in reply["message"] and BOB_TOKEN not in reply["message"]
    # The connection stays usable after a refusal.
    pong = await client.request({"type": "ping", "id": "after"})
    assert pong["type"] == "pong", pong


async def test_welcome_names_the_principal_and_its_role(tmp_path: Path, token_env: None) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_server(principal_config(tmp_path)) as running:
            for token, name, role in (
                (ANA_TOKEN, "ana", "user"),
                (ROOT_TOKEN, "admin", "admin"),
            ):
                async with running.client(token) as client:
                    welcome = client.seen[-1]
                    assert (welcome["principal"], welcome["role"]) == (name, role)


async def test_a_user_cannot_follow_or_act_on_another_principals_things(
    tmp_path: Path, token_env: None
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_server(principal_config(tmp_path)) as running:
            async with running.client(ANA_TOKEN) as ana, running.client(BOB_TOKEN) as bob:
                accepted, _ = await ask(ana, GOAL)
                session, run = accepted["session_id"], accepted["run_id"]
                await running.settled()
                head = running.app.store.head_position
                for n, stream in enumerate(
                    (
                        "$all",
                        f"session-{session}",
                        f"run-{run}",
                        "session-does-not-exist",
                        "run-does-not-exist",
                    )
                ):
                    await expect_forbidden(bob, {"type": "subscribe", "id": n, "stream": stream})
                await expect_forbidden(
                    bob, {"type": "message", "id": "m", "text": GOAL, "session_id": session}
                )
                await expect_forbidden(bob, {"type": "cancel", "id": "c", "run_id": run})
                await expect_forbidden(bob, {"type": "resume", "id": "r", "run_id": run})
                await expect_forbidden(
                    bob,
                    {
                        "type": "approve",
                        "id": "a",
                        "run_id": run,
                        "step_id": "s1",
                        "decision": "approve",
                    },
                )
                await expect_forbidden(
                    bob, {"type": "forget", "id": "f", "scope": "session", "session_id": session}
                )
                # Nothing was appended for any refused request.
                assert running.app.store.head_position == head

                # Its own things are Ana's to follow; a new session is Bob's own.
                reply = await ana.request(
                    {"type": "subscribe", "id": "own", "stream": f"session-{session}"}
                )
                assert reply["type"] == "subscribed", reply
                own, _ = await ask(bob, GOAL)
                reply = await bob.request(
                    {"type": "subscribe", "id": "own", "stream": f"run-{own['run_id']}"}
                )
                assert reply["type"] == "subscribed", reply


async def test_an_admin_follows_and_acts_on_everything(tmp_path: Path, token_env: None) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_server(principal_config(tmp_path)) as running:
            async with running.client(ANA_TOKEN) as ana, running.client(ROOT_TOKEN) as root:
                accepted, _ = await ask(ana, GOAL)
                session, run = accepted["session_id"], accepted["run_id"]
                for stream in ("$all", f"session-{session}", f"run-{run}"):
                    reply = await root.request({"type": "subscribe", "id": 1, "stream": stream})
                    assert reply["type"] == "subscribed", reply
                # An admin may post into a user's session; the run records who asked.
                posted, _ = await ask(root, GOAL, session_id=accepted["session_id"])
                first = await running.app.store.read_stream(f"run-{posted['run_id']}", 0, 1)
                assert first[0].data["principal"] == "admin"


async def test_memory_tools_act_for_the_principal_never_for_a_planned_name(
    tmp_path: Path, token_env: None
) -> None:
    """Bob names Ana in the goal (the plan carries user=ana); the memory lands in Bob's
    stream, and Ana's recall does not find it."""
    config = principal_config(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with running_server(config) as running:
            async with running.client(ANA_TOKEN) as ana, running.client(BOB_TOKEN) as bob:
                _, events = await ask(bob, "remember for user ana that the gate code is 9931")
                plan = next(e for e in events if e["event_type"] == "PlanCreated")
                assert plan["data"]["steps"][0]["parameters"].get("user") == "ana"
                assert events[-1]["event_type"] == "RunCompleted", events[-1]
                assert await running.app.store.stream_version("memory-ana") == 0
                assert await running.app.store.stream_version("memory-bob") == 1
                _, recalled = await ask(ana, "recall the gate code")
                assert "9931" not in recalled[-1]["data"]["answer"]
                _, recalled = await ask(bob, "recall the gate code")
                assert "9931" in recalled[-1]["data"]["answer"]


async def test_events_record_principal_names_and_no_token_anywhere(
    tmp_path: Path, token_env: None
) -> None:
    config = principal_config(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with running_server(config) as running:
            async with running.client(ANA_TOKEN) as ana:
                await ask(ana, GOAL)
    log = LmdbEventLog.open(config.store.data_path, readonly=True)
    try:
        records = Sealer(FileKeyStore(config.store.keys_path, readonly=True)).open_many(
            log.read(0, 10_000)
        )
    finally:
        log.close()
    started = next(r for r in records if r.type == "SessionStarted")
    requested = next(r for r in records if r.type == "RunRequested")
    assert (started.data["user"], requested.data["principal"]) == ("ana", "ana")
    assert requested.data["goal"] == GOAL
    for path in every_file(tmp_path / "data"):
        content = path.read_bytes()
        for token in (ANA_TOKEN, BOB_TOKEN, ROOT_TOKEN):
            assert token.encode() not in content, path


def test_principal_config_errors_name_the_setting(tmp_path: Path) -> None:
    config = principal_config(tmp_path)
    with pytest.raises(ConfigError, match="ANA_TOKEN is not set"):
        server_principals(config, env={"BOB_TOKEN": BOB_TOKEN})
    with pytest.raises(ConfigError, match="at least 32 characters"):
        server_principals(config, env={"ANA_TOKEN": "short", "BOB_TOKEN": BOB_TOKEN})
    with pytest.raises(ConfigError, match="already another principal's"):
        server_principals(config, env={"ANA_TOKEN": ANA_TOKEN, "BOB_TOKEN": ANA_TOKEN})
    tokens = server_principals(config, env=TOKEN_ENV)
    assert {p.name: p.role for p in tokens.values()} == {
        "admin": "admin",
        "ana": "user",
        "bob": "user",
    }


async def test_retry_over_the_websocket_is_the_owners(tmp_path: Path, token_env: None) -> None:
    """A failed run is retried by its owner as a new run whose events follow; another
    user gets `forbidden`, a second retry `conflict`."""
    with trio.fail_after(TIMEOUT_S):
        async with running_server(principal_config(tmp_path)) as running:
            async with running.client(ANA_TOKEN) as ana, running.client(BOB_TOKEN) as bob:
                accepted, events = await ask(ana, "book me a flight to Paris")
                assert events[-1]["event_type"] == "RunFailed", events[-1]
                run = accepted["run_id"]
                await expect_forbidden(bob, {"type": "retry", "id": "r", "run_id": run})
                retried = await ana.request({"type": "retry", "id": "r", "run_id": run})
                assert retried["type"] == "retried" and retried["run_id"] == run, retried
                again = await ana.events_until(wait=TIMEOUT_S)
                assert again[0]["event_type"] == "RunRequested"
                assert again[0]["data"]["retry_of"] == run
                assert again[0]["stream"] == f"run-{retried['new_run_id']}"
                twice = await ana.request({"type": "retry", "id": "r2", "run_id": run})
                assert twice["type"] == "error" and twice["code"] == "conflict", twice
