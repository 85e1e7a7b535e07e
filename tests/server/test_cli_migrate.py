"""`autoagent migrate`: LMDB data dirs in `tmp_path` and a real PostgreSQL (`postgres_url`);
copies keep positions and bytes, continue after an interruption, refuse a destination
that is no prefix of the source, and report errors as one line. The sealing keys go
with the log: sealed content opens at the destination, a forgotten key stays forgotten,
and a destination holding another key for an owner is refused."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from events import (
    FORGOTTEN_TEXT,
    LOCAL_PRINCIPAL,
    EventLog,
    EventStore,
    FileKeyStore,
    KeyRecord,
    KeyStore,
    LmdbEventLog,
    MemoryKeyDestroyed,
    PlanCreated,
    PostgresEventLog,
    PostgresKeyStore,
    RunRequested,
    Sealer,
    SessionForgotten,
    SessionStarted,
    StepStarted,
    StoreOptions,
    UserMessageReceived,
    audit_log,
    open_event_store,
)
from server._datadir import open_data_dir_lock
from server.cli import _migrate
from server.cli._migrate import CopyResult, copy_log

from .test_cli import run_cli

RUNS = 5  # 3 events each


async def _fill(path: Path, runs: int = RUNS, goal: str = "g") -> None:
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        for i in range(runs):
            stream = f"run-{i}"
            await store.append(stream, [RunRequested(run_id=str(i), session_id="s", goal=goal)])
            await store.append(stream, [PlanCreated(run_id=str(i), steps=[])])
            await store.append(stream, [StepStarted(run_id=str(i), step_id="a")])


def _raw(path: Path) -> list[tuple[int, bytes]]:
    log = LmdbEventLog.open(path, readonly=True)
    try:
        assert audit_log(log).ok
        return log.read_raw(0, 100_000)
    finally:
        log.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    trio.run(_fill, path)
    return path


def test_lmdb_to_postgres_and_back_keeps_every_record(
    source: Path, tmp_path: Path, postgres_url: str
) -> None:
    code, out = run_cli(
        "migrate", "--from", f"lmdb:{source}", "--to", f"postgres:{postgres_url}", "--batch", "4"
    )
    assert (code, out) == (
        0,
        "copied 15 events (0 were already there); destination head 15\n"
        "copied 0 sealing keys (0 were already there)\n"
        "audit ok: 15 events checked, hash chain intact\n",
    )
    back = tmp_path / "back"
    code, out = run_cli(
        "migrate", "--from", f"postgres:{postgres_url}", "--to", f"lmdb:{back}", "--json"
    )
    assert code == 0
    assert json.loads(out) == {
        "copied": 15,
        "skipped": 0,
        "head_position": 15,
        "keys_copied": 0,
        "keys_present": 0,
        "keys_destroyed": 0,
        "audit_ok": True,
        "first_bad_position": None,
        "problem": None,
    }
    assert _raw(back) == _raw(source)
    assert run_cli("audit", "--data-dir", str(back))[0] == 0
    assert run_cli("runs", "list", "--json", "--data-dir", str(back))[0] == 0


def test_interrupted_copy_continues_where_the_destination_stops(
    source: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def ctrl_c_after_first_batch(
        log: EventLog, destination: EventLog, batch: int, _: object, **options: Any
    ) -> CopyResult:
        def interrupt(done: int, total: int) -> None:
            raise KeyboardInterrupt

        return copy_log(log, destination, batch, interrupt, **options)

    target = f"postgres:{postgres_url}"
    with monkeypatch.context() as patch:
        patch.setattr(_migrate, "copy_log", ctrl_c_after_first_batch)
        code, out = run_cli("migrate", "--from", f"lmdb:{source}", "--to", target, "--batch", "4")
    assert (code, out) == (1, "")
    assert capsys.readouterr().err == (
        "autoagent: interrupted; the destination holds records 1-4: "
        "run the same command again to continue\n"
    )
    argv = ("migrate", "--from", f"lmdb:{source}", "--to", target, "--json")
    code, out = run_cli(*argv)
    assert code == 0
    assert json.loads(out)["copied"] == 11
    assert json.loads(out)["skipped"] == 4
    code, out = run_cli(*argv)  # a complete copy: nothing to do, still audited
    assert code == 0
    assert (json.loads(out)["copied"], json.loads(out)["skipped"]) == (0, 15)
    assert json.loads(out)["audit_ok"] is True


def test_copy_of_a_prefix_continues_between_lmdb_dirs(source: Path, tmp_path: Path) -> None:
    destination = tmp_path / "destination"
    log, copy = LmdbEventLog.open(source, readonly=True), LmdbEventLog.open(destination)
    try:
        result = copy_log(log, copy, batch=2, max_batches=3)
        assert (result.copied, result.skipped, result.head_position) == (6, 0, 6)
    finally:
        copy.close()
        log.close()
    code, out = run_cli("migrate", "--from", f"lmdb:{source}", "--to", f"lmdb:{destination}")
    assert code == 0
    assert out.startswith("copied 9 events (6 were already there); destination head 15\n")
    assert _raw(destination) == _raw(source)


async def test_destination_that_diverges_is_refused_with_one_line(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    await _fill(other, runs=2, goal="something else")
    before = _raw(other)
    code, out = run_cli("migrate", "--from", f"lmdb:{source}", "--to", f"lmdb:{other}")
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == (
        "autoagent: error: the destination's record 6 differs from the source's: "
        "it is not a copy of this log (refusing to write into it)\n"
    )
    assert _raw(other) == before
    code, out = run_cli("migrate", "--from", f"lmdb:{other}", "--to", f"lmdb:{source}")
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == (
        "autoagent: error: the destination holds 15 records, the source only 6: "
        "it is not a copy of this log\n"
    )


async def test_data_dir_of_a_running_server_is_not_written_into(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "served"
    async with open_data_dir_lock(destination) as lock:
        code, _ = run_cli("migrate", "--from", f"lmdb:{source}", "--to", f"lmdb:{destination}")
    assert code == 2
    assert capsys.readouterr().err == (
        f"autoagent: error: {destination}: a running autoagent serve (pid {lock.pid}) holds "
        "this data dir; stop it before migrating into it\n"
    )
    assert not (destination / "data.mdb").exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ("--from", "mysql:x", "--to", "lmdb:y"),
            "--from 'mysql:x' is not a log: expected lmdb:DIR or postgres:URL",
        ),
        (("--from", "lmdb:a", "--to", "lmdb:./a"), "--from and --to name the same log"),
        (
            ("--from", "lmdb:a", "--to", "lmdb:b", "--batch", "0"),
            "--batch 0 is not a number of records (1 or more)",
        ),
        (
            ("--from", "lmdb:{tmp}/missing", "--to", "lmdb:b"),
            "{tmp}/missing: no such data directory",
        ),
        (
            ("--from", "lmdb:a", "--to", "postgres:x", "--to-keys", "k"),
            "--to-keys is for an lmdb:DIR log (PostgreSQL keeps its keys in its database)",
        ),
    ],
    ids=["unknown-backend", "same-log", "batch-0", "no-source", "keys-dir-of-postgres"],
)
def test_unusable_arguments_are_one_line_exit_2(
    argv: tuple[str, ...], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli("migrate", *(a.format(tmp=tmp_path) for a in argv))
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == f"autoagent: error: {error.format(tmp=tmp_path)}\n"


# --- sealed content and its keys ------------------------------------------------------


async def _say(
    path: Path, session: str, user: str, text: str, keys_dir: Path | None = None
) -> None:
    """`user` opens `session` and says `text` in it (message id `m-<session>`), sealed
    with the keys of `keys_dir` (default `<path>/keys`) as a server would."""
    async with _sealed_store(path, keys_dir) as store:
        await store.append(f"session-{session}", [SessionStarted(session_id=session, user=user)])
        message = UserMessageReceived(session_id=session, message_id=f"m-{session}", text=text)
        await store.append(f"session-{session}", [message])


async def _forget_session(path: Path, session: str) -> None:
    """What `autoagent forget --session` does: the key goes, then the event records it."""
    async with _sealed_store(path) as store:
        assert store.sealer is not None
        key_id = store.sealer.forget_session(session)
        assert key_id is not None
        await store.append(
            f"session-{session}", [SessionForgotten(session, key_id, LOCAL_PRINCIPAL)]
        )


async def _forget_principal(path: Path, user: str) -> None:
    async with _sealed_store(path) as store:
        assert store.sealer is not None
        key_id = store.sealer.forget_principal(user)
        assert key_id is not None
        await store.append(f"memory-{user}", [MemoryKeyDestroyed(user, key_id)])


def _sealed_store(
    path: Path, keys_dir: Path | None = None
) -> AbstractAsyncContextManager[EventStore]:
    sealer = Sealer(FileKeyStore(keys_dir or path / "keys"))
    return open_event_store(path, StoreOptions(sync=False), sealer=sealer)


def _texts(log: EventLog, keys: KeyStore) -> dict[str, str]:
    """message id -> text of every message, as stored and as opened with `keys`."""
    messages = [r for r in log.read(0, 1000) if r.type == "UserMessageReceived"]
    assert {r.data["text"] for r in messages} == {FORGOTTEN_TEXT}  # sealed in the log
    return {r.data["message_id"]: r.data["text"] for r in Sealer(keys).open_many(messages)}


def _lmdb_texts(path: Path, keys_dir: Path | None = None) -> dict[str, str]:
    log = LmdbEventLog.open(path, readonly=True)
    try:
        return _texts(log, FileKeyStore(keys_dir or path / "keys", readonly=True))
    finally:
        log.close()


def _postgres_texts(url: str) -> dict[str, str]:
    log, keys = PostgresEventLog.open(url, readonly=True), PostgresKeyStore.open(url, readonly=True)
    try:
        return _texts(log, keys)
    finally:
        keys.close()
        log.close()


def _postgres_keys(url: str) -> list[KeyRecord]:
    keys = PostgresKeyStore.open(url, readonly=True)
    try:
        return keys.records()
    finally:
        keys.close()


def _postgres_head(url: str) -> int:
    log = PostgresEventLog.open(url, readonly=True)
    try:
        return log.head()[0]
    finally:
        log.close()


def _migrate_json(*argv: str) -> dict[str, Any]:
    code, out = run_cli("migrate", *argv, "--json")
    assert code == 0
    report = json.loads(out)
    assert isinstance(report, dict) and report["audit_ok"] is True
    return report


def _keys_report(report: dict[str, Any]) -> tuple[int, int, int]:
    return report["keys_copied"], report["keys_present"], report["keys_destroyed"]


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    """A data dir where ana and bob each said something in a session of their own;
    bob's session was forgotten before any copy (its key destroyed)."""
    path = tmp_path / "sealed"

    async def fill() -> None:
        await _say(path, "s1", "ana", "ana's secret")
        await _say(path, "s2", "bob", "bob's secret")
        await _forget_session(path, "s2")

    trio.run(fill)
    return path


OPENED = {"m-s1": "ana's secret", "m-s2": FORGOTTEN_TEXT}


def test_sealed_content_opens_after_lmdb_to_postgres_and_back(
    sealed: Path, tmp_path: Path, postgres_url: str
) -> None:
    assert _lmdb_texts(sealed) == OPENED
    code, out = run_cli("migrate", "--from", f"lmdb:{sealed}", "--to", f"postgres:{postgres_url}")
    assert code == 0
    assert out.splitlines()[1] == "copied 3 sealing keys (0 were already there)"
    assert _postgres_texts(postgres_url) == OPENED
    originals = FileKeyStore(sealed / "keys", readonly=True).records()
    assert [r.owner for r in originals] == ["ana", "bob", "session:s1"]  # s2's is gone
    assert _postgres_keys(postgres_url) == originals  # raw: session:s1 still wrapped
    back = tmp_path / "back"
    report = _migrate_json("--from", f"postgres:{postgres_url}", "--to", f"lmdb:{back}")
    assert _keys_report(report) == (3, 0, 0)
    assert _lmdb_texts(back) == OPENED
    assert FileKeyStore(back / "keys", readonly=True).records() == originals


def test_a_rerun_copies_no_key_twice(sealed: Path, postgres_url: str) -> None:
    argv = ("--from", f"lmdb:{sealed}", "--to", f"postgres:{postgres_url}")
    first = _migrate_json(*argv)
    assert (first["copied"], _keys_report(first)) == (5, (3, 0, 0))
    again = _migrate_json(*argv)
    assert (again["copied"], again["skipped"], _keys_report(again)) == (0, 5, (0, 3, 0))
    assert len(_postgres_keys(postgres_url)) == 3
    assert _postgres_texts(postgres_url) == OPENED


def test_destination_holding_another_key_for_an_owner_is_refused_with_one_line(
    sealed: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = PostgresKeyStore.open(postgres_url)
    try:
        other = theirs.current_or_create("ana")
    finally:
        theirs.close()
    ours = FileKeyStore(sealed / "keys", readonly=True).current("ana")
    assert ours is not None
    argv = ("migrate", "--from", f"lmdb:{sealed}", "--to", f"postgres:{postgres_url}")
    assert run_cli(*argv) == (2, "")
    assert capsys.readouterr().err == (
        "autoagent: error: the destination's key store holds another key for 'ana' "
        f"(key {other.key_id}; the source's is {ours.key_id}): refusing to replace it\n"
    )
    assert _postgres_keys(postgres_url) == [KeyRecord("ana", other.key_id, other.secret)]
    assert _postgres_head(postgres_url) == 0  # refused before anything was written


def test_a_forget_at_the_source_after_a_copy_reaches_the_destination(
    sealed: Path, postgres_url: str
) -> None:
    """The forgotten key is erased at the destination with the batch holding its
    event, not resurrected there by the copy made before the forget."""
    argv = ("--from", f"lmdb:{sealed}", "--to", f"postgres:{postgres_url}")
    _migrate_json(*argv)
    trio.run(_forget_session, sealed, "s1")
    report = _migrate_json(*argv)
    assert (report["copied"], _keys_report(report)) == (1, (0, 2, 1))
    assert _postgres_texts(postgres_url) == {"m-s1": FORGOTTEN_TEXT, "m-s2": FORGOTTEN_TEXT}
    assert [r.owner for r in _postgres_keys(postgres_url)] == ["ana", "bob"]
    assert _migrate_json(*argv)["keys_copied"] == 0  # and a later run does not bring it back


def test_a_principal_forgotten_and_given_a_new_key_since_a_copy_is_not_a_conflict(
    sealed: Path, postgres_url: str
) -> None:
    """The destination's old key of ana is the one the records still to copy forget:
    it is erased, and ana's new key copied, where another key would be refused."""
    argv = ("--from", f"lmdb:{sealed}", "--to", f"postgres:{postgres_url}")
    _migrate_json(*argv)
    trio.run(_forget_principal, sealed, "ana")
    trio.run(_say, sealed, "s3", "ana", "ana's new secret")
    report = _migrate_json(*argv)
    assert _keys_report(report) == (2, 2, 1)  # ana's new key and s3's; bob and s1 there
    assert _postgres_texts(postgres_url) == {
        "m-s1": FORGOTTEN_TEXT,
        "m-s2": FORGOTTEN_TEXT,
        "m-s3": "ana's new secret",
    }


def test_an_interrupted_key_copy_continues(
    sealed: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_import = PostgresKeyStore.import_record

    def ctrl_c_after_one_key(self: PostgresKeyStore, record: KeyRecord) -> bool:
        real_import(self, record)
        raise KeyboardInterrupt

    argv = ("--from", f"lmdb:{sealed}", "--to", f"postgres:{postgres_url}")
    with monkeypatch.context() as patch:
        patch.setattr(PostgresKeyStore, "import_record", ctrl_c_after_one_key)
        assert run_cli("migrate", *argv) == (1, "")
    assert capsys.readouterr().err == (
        "autoagent: interrupted while copying the sealing keys (no record copied in this "
        "run): run the same command again to continue\n"
    )
    assert (len(_postgres_keys(postgres_url)), _postgres_head(postgres_url)) == (1, 0)
    report = _migrate_json(*argv)
    assert (report["copied"], _keys_report(report)) == (5, (2, 1, 0))
    assert _postgres_texts(postgres_url) == OPENED


def test_a_postgres_log_without_a_keys_table_has_no_keys_to_copy(
    source: Path, tmp_path: Path, postgres_url: str
) -> None:
    log, copy = LmdbEventLog.open(source, readonly=True), PostgresEventLog.open(postgres_url)
    try:
        copy_log(log, copy)  # the log alone, as migrate did before it copied keys
    finally:
        copy.close()
        log.close()
    back = tmp_path / "back"
    report = _migrate_json("--from", f"postgres:{postgres_url}", "--to", f"lmdb:{back}")
    assert (report["copied"], _keys_report(report)) == (15, (0, 0, 0))
    assert not (back / "keys").exists()


def test_keys_outside_the_data_dir_are_copied_with_from_keys_and_to_keys(
    tmp_path: Path,
) -> None:
    source, source_keys = tmp_path / "source", tmp_path / "source-keys"
    trio.run(_say, source, "s1", "ana", "ana's secret", source_keys)
    destination, destination_keys = tmp_path / "copy", tmp_path / "copy-keys"
    report = _migrate_json(
        *("--from", f"lmdb:{source}", "--from-keys", str(source_keys)),
        *("--to", f"lmdb:{destination}", "--to-keys", str(destination_keys)),
    )
    assert _keys_report(report) == (2, 0, 0)
    assert _lmdb_texts(destination, destination_keys) == {"m-s1": "ana's secret"}
    assert not (destination / "keys").exists()
