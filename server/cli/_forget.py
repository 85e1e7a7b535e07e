"""`autoagent forget --user NAME | --session ID`: destroy a sealing key.

What the key sealed - the goals, messages, plan parameters, results and answers of the
principal's sessions (or of the one session), and the principal's memories - no longer
opens anywhere: log, projections, indexes, exports. The envelope and hashes stay, so
`audit` still passes.

When a server holds the data dir (or `--server` names one), the request goes to it
over the WebSocket API (`server.cli._client`; `--token` or AUTOAGENT_TOKEN when auth is
on), so the server's own cache of the key is dropped at once. Otherwise the key is
destroyed here and the event that records it appended to the log.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import trio

from events import (
    LOCAL_PRINCIPAL,
    MemoryKeyDestroyed,
    Sealer,
    SessionForgotten,
)
from server._render import dumps
from server._views import memory_keys
from server.app import open_configured_store
from server.cli._client import add_server_flags, open_server_client, server_url, token_of
from server.config import Config
from server.errors import InputError


def add_forget_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    forget = commands.add_parser(
        "forget",
        parents=[common],
        help="destroy a principal's or a session's key: its content is gone for good",
    )
    whom = forget.add_mutually_exclusive_group(required=True)
    whom.add_argument("--user", metavar="NAME", help="the principal whose content to forget")
    whom.add_argument("--session", metavar="ID", help="the session whose content to forget")
    add_server_flags(forget)
    forget.add_argument("--json", action="store_true", help="print the outcome as JSON")


def forget_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    url = server_url(config, args)
    if url is not None:
        outcome = trio.run(_through_server, url, args)
    else:
        outcome = trio.run(_in_process, config, args)
    if args.json:
        out.write(dumps(outcome) + "\n")
    elif outcome["key_destroyed"]:
        out.write(f"forgot {_whom(args)}: its key is destroyed\n")
    else:
        out.write(f"{_whom(args)} had no key: nothing was sealed for it\n")
    return 0


def _whom(args: argparse.Namespace) -> str:
    return f"user {args.user}" if args.user else f"session {args.session}"


async def _in_process(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    sealer = Sealer(memory_keys(config))
    async with open_configured_store(config, sealer) as store:
        if args.session:
            if await store.stream_version(f"session-{args.session}") == 0:
                raise InputError(f"no session {args.session!r}")
            key_id = await trio.to_thread.run_sync(sealer.forget_session, args.session)
            if key_id is not None:
                event = SessionForgotten(args.session, key_id, LOCAL_PRINCIPAL)
                await store.append(f"session-{args.session}", [event])
        else:
            key_id = await trio.to_thread.run_sync(sealer.forget_principal, args.user)
            if key_id is not None:
                await store.append(f"memory-{args.user}", [MemoryKeyDestroyed(args.user, key_id)])
    return {"via": "data dir", "key_destroyed": key_id is not None}


async def _through_server(url: str, args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"scope": "session", "session_id": args.session}
    if not args.session:
        fields = {"scope": "me", "user": args.user}
    async with open_server_client(url, token_of(args)) as client:
        reply = await client.request("forget", "forgotten", **fields)
    return {"via": url, "key_destroyed": bool(reply.get("key_destroyed"))}
