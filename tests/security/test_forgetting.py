"""Forgetting that forgets, tried through the server as a user would: remember a
secret, ask about it, forget; then read every byte under the data dir and the key
directory (log, projection state, indexes) and the `events export` output, and find the
secret nowhere - while `audit` still passes.

Before the forget the secret is not in any file either: personal content reaches the
log sealed, and projections only ever see the stubs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import trio

from events import FORGOTTEN_TEXT
from server.cli._main import main
from server.config import Config
from tests.security.principal_server import (
    ANA_TOKEN,
    BOB_TOKEN,
    TIMEOUT_S,
    ask,
    every_file,
    principal_config,
    running_server,
)

SECRET = "zebra-4711-quartz"
OTHER = "walrus-2288-ember"


def files_holding(config: Config, secret: str) -> list[Path]:
    roots = (config.store.data_path, config.store.keys_path)
    return [p for root in roots for p in every_file(root) if secret.encode() in p.read_bytes()]


def cli(config: Config, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main([*argv, "--data-dir", str(config.store.data_path)], out=out)
    return code, out.getvalue()


async def test_forget_me_leaves_the_secret_nowhere_and_the_log_audits(
    tmp_path: Path, token_env: None
) -> None:
    config = principal_config(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with running_server(config) as running:
            async with running.client(ANA_TOKEN) as ana, running.client(BOB_TOKEN) as bob:
                saved, _ = await ask(ana, f"remember that the vault code is {SECRET}")
                _, bobs = await ask(bob, f"remember that my locker code is {OTHER}")
                _, recalled = await ask(ana, "recall the vault code")
                assert SECRET in recalled[-1]["data"]["answer"], recalled[-1]
                await running.settled()
                # Sealed at rest: not in any file even before the forget.
                assert files_holding(config, SECRET) == []
                reply = await ana.request({"type": "forget", "id": "f", "scope": "me"})
                assert reply["type"] == "forgotten" and reply["key_destroyed"] is True, reply
                # The server's own cache is gone too: what it streams is forgotten.
                session = saved["session_id"]
                await ana.request({"type": "subscribe", "id": "s", "stream": f"session-{session}"})
                replayed = await ana.events(3)
                message = next(e for e in replayed if e["event_type"] == "UserMessageReceived")
                assert message["data"]["text"] == FORGOTTEN_TEXT
                assert message["data"]["forgotten"] is True
                assert SECRET not in json.dumps(replayed)
                # A new goal works; its content is sealed under a new key and opens.
                _, again = await ask(ana, "what is 2 + 2")
                assert "4" in again[-1]["data"]["answer"]
                # Bob's content is untouched.
                _, recalled = await ask(bob, "recall the locker code")
                assert OTHER in recalled[-1]["data"]["answer"]
    assert files_holding(config, SECRET) == []
    code, exported = cli(config, "events", "export")
    assert code == 0 and SECRET not in exported
    lines = [json.loads(line) for line in exported.splitlines()]
    forgotten = [line for line in lines if line["data"].get("forgotten")]
    assert {"RunRequested", "UserMessageReceived", "RunCompleted"} <= {
        line["type"] for line in forgotten
    }
    assert OTHER in exported  # Bob's goal still opens in the export
    assert cli(config, "audit")[0] == 0
    code, shown = cli(config, "runs", "show", saved["run_id"])
    assert code == 0 and SECRET not in shown and FORGOTTEN_TEXT in shown
    assert bobs[-1]["event_type"] == "RunCompleted"


async def test_forget_session_forgets_that_session_alone(tmp_path: Path, token_env: None) -> None:
    config = principal_config(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with running_server(config) as running:
            async with running.client(ANA_TOKEN) as ana:
                kept, _ = await ask(ana, f"what is 12 * 12 for {OTHER}")
                gone, _ = await ask(ana, f"what is 11 * 11 for {SECRET}")
                await running.settled()
                reply = await ana.request(
                    {
                        "type": "forget",
                        "id": "f",
                        "scope": "session",
                        "session_id": gone["session_id"],
                    }
                )
                assert reply["type"] == "forgotten" and reply["key_destroyed"] is True, reply
                await running.settled()
    code, exported = cli(config, "events", "export")
    assert code == 0 and SECRET not in exported and OTHER in exported
    assert "SessionForgotten" in exported
    assert files_holding(config, SECRET) == []
    code, shown = cli(config, "runs", "show", kept["run_id"])
    assert OTHER in shown
    assert cli(config, "audit")[0] == 0


async def test_cli_forget_without_a_server_destroys_the_key(
    tmp_path: Path, token_env: None
) -> None:
    config = principal_config(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with running_server(config) as running:
            async with running.client(ANA_TOKEN) as ana:
                accepted, _ = await ask(ana, f"what is 3 * 3 for {SECRET}")
                await running.settled()
    code, out = await trio.to_thread.run_sync(
        cli, config, "forget", "--session", accepted["session_id"], "--json"
    )
    assert code == 0 and json.loads(out) == {"via": "data dir", "key_destroyed": True}
    code, out = await trio.to_thread.run_sync(
        cli, config, "forget", "--session", accepted["session_id"]
    )
    assert code == 0 and "had no key" in out
    code, exported = cli(config, "events", "export")
    assert SECRET not in exported and "SessionForgotten" in exported
    code, out = await trio.to_thread.run_sync(cli, config, "forget", "--user", "ana", "--json")
    assert code == 0 and json.loads(out)["key_destroyed"] is True
    assert cli(config, "audit")[0] == 0
