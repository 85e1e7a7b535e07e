"""Crypto-shredding end to end, on a real data dir: after `forget_all`, nothing the
program can read - `events export`, a fresh `replay` rebuild, any file in the data
dir - holds the user's content or embeddings, while `audit` and `replay --verify`
still pass (the hash chain covers the ciphertext)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import trio

from events import LmdbEventLog
from projections import FileKeyStore, LmdbStateStore, MemoryProjection, open_content
from server.cli._main import main

from .conftest import TIMEOUT_S, hash_vector, open_lab

SECRET = "my bank pin is 4321 XYZZY-SECRET"
KEPT = "bob keeps a spare key under the blue flowerpot PLUGH-KEPT"


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


async def cli(*argv: str) -> tuple[int, str]:
    return await trio.to_thread.run_sync(run_cli, *argv)


def files_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def sealed_memories(data_dir: Path, user: str) -> list[dict[str, object]]:
    log = LmdbEventLog.open(data_dir, readonly=True)
    try:
        return [
            r.data for r in log.read_stream(f"memory-{user}", 0, 1000) if r.type == "MemoryAdded"
        ]
    finally:
        log.close()


async def test_forget_all_shreds_export_rebuild_and_files_while_audit_passes(
    data_dir: Path,
) -> None:
    secret_vector = hash_vector(SECRET)[0].astype("<f4").tobytes()
    with trio.fail_after(TIMEOUT_S * 3):
        async with open_lab(data_dir) as lab:
            await lab.call("remember", content=SECRET, user="alice")
            await lab.call("remember", content="alice likes green tea", user="alice")
            await lab.call("remember", content=KEPT, user="bob")
            await lab.runner.wait_for(lab.store.head_position)
            await trio.to_thread.run_sync(lab.runner.flush_snapshots)
        # Before: sealed in the log, and recoverable with alice's key.
        keys = FileKeyStore(data_dir / "keys", readonly=True)
        contents = [open_content(keys, m) for m in sealed_memories(data_dir, "alice")]
        assert SECRET in contents
        code, before = await cli("events", "export", "--data-dir", str(data_dir))
        assert code == 0 and "XYZZY" not in before and "PLUGH" not in before

        async with open_lab(data_dir) as lab:
            assert lab.projection.count("alice") == 2  # restored from the snapshot
            assert (await lab.call("forget_all", user="alice"))["key_destroyed"] is True
            await lab.runner.wait_for(lab.store.head_position)

        code, exported = await cli("events", "export", "--data-dir", str(data_dir))
        assert code == 0
        records = [json.loads(line) for line in exported.splitlines()]
        assert [r["type"] for r in records if r["stream"] == "memory-alice"] == [
            "MemoryAdded",
            "MemoryAdded",
            "MemoryKeyDestroyed",
        ]
        assert "XYZZY" not in exported
        keys = FileKeyStore(data_dir / "keys", readonly=True)
        assert [open_content(keys, m) for m in sealed_memories(data_dir, "alice")] == [None, None]
        assert [open_content(keys, m) for m in sealed_memories(data_dir, "bob")] == [KEPT]

        code, out = await cli("audit", "--data-dir", str(data_dir))
        assert (code, out.split(":")[0]) == (0, "ok")
        code, out = await cli("replay", "--verify", "--data-dir", str(data_dir))
        assert (code, out) == (
            0,
            "ok: sessions, runs, metrics, memory, documents match a fresh rebuild\n",
        )

        code, out = await cli("replay", "--projection", "memory", "--data-dir", str(data_dir))
        assert code == 0, out
        state = LmdbStateStore.open(data_dir / "projections", readonly=True)
        try:
            rebuilt = MemoryProjection(keys)
            rebuilt.restore(state.snapshot("memory"))
        finally:
            state.close()
        assert (rebuilt.count("alice"), rebuilt.count("bob")) == (0, 1)

        everything = files_under(data_dir)
        assert b"XYZZY" not in everything and secret_vector not in everything
        assert b"PLUGH" not in everything  # bob's memory is sealed too, just not shredded
