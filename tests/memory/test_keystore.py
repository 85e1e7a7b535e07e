"""The key store and sealing: one conformance suite over the file, PostgreSQL and memory
backends, the behaviour of two stores on one backend (file, PostgreSQL), plus what only
the file backend promises (files, modes, erasure, read-only). What only the PostgreSQL
backend promises is in `test_postgres_keys.py`."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from events import KeyConflict, KeyRecord, PostgresKeyStore
from projections import (
    FileKeyStore,
    KeyStore,
    KeyStoreError,
    KeyStoreReadOnly,
    MemoryKeyStore,
    SealBroken,
    UserKey,
)

OpenStore = Callable[..., KeyStore]


@contextmanager
def shared_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[OpenStore]:
    """A function opening another store on one backend several processes share
    (options: `readonly`, `revalidate_s`); every store it opened is closed on exit."""
    url = str(request.getfixturevalue("postgres_url")) if kind == "postgres" else ""
    opened: list[PostgresKeyStore] = []

    def open_store(**options: Any) -> KeyStore:
        if not url:
            return FileKeyStore(tmp_path / "keys", **options)
        opened.append(PostgresKeyStore.open(url, **options))
        return opened[-1]

    try:
        yield open_store
    finally:
        for store in opened:
            store.close()


@pytest.fixture(params=["file", "postgres", "memory"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "memory":
        yield MemoryKeyStore()
        return
    with shared_backend(request.param, request, tmp_path) as open_store:
        yield open_store()


@pytest.fixture(params=["file", "postgres"])
def open_shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    with shared_backend(request.param, request, tmp_path) as open_store:
        yield open_store


def test_seal_then_open_round_trips(keys: KeyStore) -> None:
    key = keys.current_or_create("alice")
    token = key.seal(b"the cat sat on the mat", b"ctx")
    assert b"cat" not in token
    assert key.open(token, b"ctx") == b"the cat sat on the mat"


def test_sealing_twice_gives_different_ciphertexts(keys: KeyStore) -> None:
    key = keys.current_or_create("alice")
    assert key.seal(b"same", b"ctx") != key.seal(b"same", b"ctx")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t[:-1] + bytes([t[-1] ^ 1]), id="flipped-tag"),
        pytest.param(lambda t: t[:20] + bytes([t[20] ^ 1]) + t[21:], id="flipped-body"),
        pytest.param(lambda t: b"\x09" + t[1:], id="unknown-version"),
        pytest.param(lambda t: t[:10], id="truncated"),
    ],
)
def test_an_altered_token_does_not_open(keys: KeyStore, mutate: object) -> None:
    key = keys.current_or_create("alice")
    token = key.seal(b"secret text", b"ctx")
    assert callable(mutate)
    with pytest.raises(SealBroken, match="sealed for 'alice'"):
        key.open(mutate(token), b"ctx")


def test_a_token_does_not_open_in_another_context(keys: KeyStore) -> None:
    key = keys.current_or_create("alice")
    token = key.seal(b"secret", b"memory m1")
    with pytest.raises(SealBroken, match="authentication failed"):
        key.open(token, b"memory m2")


def test_users_have_separate_keys(keys: KeyStore) -> None:
    alice, bob = keys.current_or_create("alice"), keys.current_or_create("bob")
    assert alice.key_id != bob.key_id
    with pytest.raises(SealBroken):
        bob.open(alice.seal(b"secret", b"ctx"), b"ctx")


def test_current_or_create_returns_the_same_key_until_destroyed(keys: KeyStore) -> None:
    first = keys.current_or_create("alice")
    assert keys.current_or_create("alice").key_id == first.key_id
    assert keys.key("alice", first.key_id) is not None
    assert keys.destroy("alice") == first.key_id
    assert keys.current("alice") is None
    assert keys.key("alice", first.key_id) is None
    second = keys.current_or_create("alice")
    assert second.key_id != first.key_id
    assert keys.key("alice", first.key_id) is None


def test_destroying_a_missing_key_returns_none(keys: KeyStore) -> None:
    assert keys.destroy("nobody") is None


def test_a_session_key_is_wrapped_and_dies_with_its_principal(keys: KeyStore) -> None:
    session = keys.session_key("s1", "ana", create=True)
    assert session is not None and session.key_id != keys.current_or_create("ana").key_id
    again = keys.session_key("s1", None)
    assert again is not None and again.secret == session.secret
    token = session.seal(b"said in s1", b"ctx")
    assert keys.destroy("ana") is not None
    assert keys.session_key("s1", None) is None
    renewed = keys.session_key("s1", "ana", create=True)
    assert renewed is not None and renewed.key_id != session.key_id
    with pytest.raises(SealBroken):
        renewed.open(token, b"ctx")


def test_destroying_one_session_keeps_the_others(keys: KeyStore) -> None:
    first = keys.session_key("s1", "ana", create=True)
    second = keys.session_key("s2", "ana", create=True)
    assert first is not None and second is not None
    assert keys.destroy_session("s1") == first.key_id
    assert keys.session_key("s1", None) is None
    kept = keys.session_key("s2", None)
    assert kept is not None and kept.key_id == second.key_id


def test_file_store_creates_nothing_until_the_first_key(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path / "keys")
    assert keys.current("alice") is None
    assert not (tmp_path / "keys").exists()


def test_file_keys_are_private_and_survive_reopening(tmp_path: Path) -> None:
    key = FileKeyStore(tmp_path / "keys").current_or_create("alice")
    (path,) = (tmp_path / "keys").iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert "alice" not in path.name
    again = FileKeyStore(tmp_path / "keys", readonly=True).current("alice")
    assert again is not None and again.secret == key.secret


def test_destroy_zeroes_the_file_before_unlinking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = FileKeyStore(tmp_path / "keys")
    key = keys.current_or_create("alice")
    (path,) = (tmp_path / "keys").iterdir()
    seen: list[bytes] = []
    real_unlink = Path.unlink

    def spy(self: Path, missing_ok: bool = False) -> None:
        seen.append(self.read_bytes())
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", spy)
    keys.destroy("alice")
    assert seen == [bytes(len(seen[0]))] and len(seen[0]) > 0
    assert not path.exists()
    assert FileKeyStore(tmp_path / "keys").key("alice", key.key_id) is None


def test_a_read_only_store_refuses_writes(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path / "keys", readonly=True)
    with pytest.raises(KeyStoreReadOnly, match="read-only"):
        keys.current_or_create("alice")
    with pytest.raises(KeyStoreReadOnly, match="read-only"):
        keys.destroy("alice")


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    FileKeyStore(tmp_path / "keys").current_or_create("alice")
    (path,) = (tmp_path / "keys").iterdir()
    path.write_bytes(b"{not json")
    with pytest.raises(KeyStoreError, match="the key file of 'alice' is damaged"):
        FileKeyStore(tmp_path / "keys").current("alice")


def test_a_key_made_by_another_process_is_seen_by_a_reader(tmp_path: Path) -> None:
    reader = FileKeyStore(tmp_path / "keys", readonly=True)
    assert reader.current("alice") is None
    made = FileKeyStore(tmp_path / "keys").current_or_create("alice")
    seen = reader.current("alice")
    assert seen is not None and seen.key_id == made.key_id
    assert len(os.listdir(tmp_path / "keys")) == 1


def test_a_key_made_by_another_store_is_seen_by_a_reader(open_shared: OpenStore) -> None:
    writer = open_shared()  # first: on PostgreSQL it creates the table a reader needs
    reader = open_shared(readonly=True)
    assert reader.current("alice") is None
    made = writer.current_or_create("alice")
    seen = reader.current("alice")
    assert seen is not None and seen.secret == made.secret


def test_a_key_destroyed_by_another_store_is_dropped_at_revalidation(
    open_shared: OpenStore,
) -> None:
    """The cached copy serves until it is `revalidate_s` old (here: until the other
    store's `revalidate_s` is lowered to 0, the test's clock), then the key is read
    again and found gone."""
    node_a, node_b = open_shared(), open_shared(revalidate_s=float("inf"))
    key = node_a.current_or_create("alice")
    seen = node_b.current("alice")
    assert seen is not None and seen.key_id == key.key_id
    assert node_a.destroy("alice") == key.key_id
    assert node_b.cached("alice") is seen  # within revalidate_s: the cached copy
    node_b.revalidate_s = 0.0
    assert node_b.cached("alice") is None
    assert node_b.current("alice") is None
    assert node_b.key("alice", key.key_id) is None


def test_a_cached_session_key_is_dropped_when_another_process_forgot_its_principal(
    open_shared: OpenStore,
) -> None:
    """Revalidation reads the key again and compares ids: a forget and a new key made
    since (by another process) do not let the old session key back in."""
    server = open_shared(revalidate_s=0.0)
    other = open_shared(revalidate_s=0.0)
    session = server.session_key("s1", "ana", create=True)
    assert session is not None and server.session_key("s1", None) is not None
    assert other.destroy("ana") is not None
    other.current_or_create("ana")  # a new principal key, with another id
    assert server.session_key("s1", None) is None
    renewed = server.session_key("s1", "ana", create=True)
    assert renewed is not None and renewed.key_id != session.key_id


def _same(found: UserKey | None, key: UserKey) -> bool:
    return found is not None and (found.key_id, found.secret) == (key.key_id, key.secret)


class _LoadCountingFileKeyStore(FileKeyStore):
    """A file store counting the key files it reads."""

    loads = 0

    def _load(self, owner: str) -> KeyRecord | None:
        self.loads += 1
        return super()._load(owner)


def test_an_unchanged_key_directory_revalidates_every_cached_key_without_reading_them(
    tmp_path: Path,
) -> None:
    # Every copy is stale at once (revalidate_s 0); the directory's stamp is trusted as
    # soon as it is seen (settled_s 0: the racy case is the next test's).
    server = _LoadCountingFileKeyStore(tmp_path / "keys", revalidate_s=0.0, settled_s=0.0)
    other = FileKeyStore(tmp_path / "keys")
    alice = server.current_or_create("alice")
    bob = server.current_or_create("bob")
    server.loads = 0  # the two reads of making them
    # Copies made before the first look are read again once...
    assert _same(server.current("alice"), alice) and _same(server.current("bob"), bob)
    assert server.loads == 2
    # ...and from then on, while the directory stays as it was, none is read.
    for _ in range(3):
        assert _same(server.current("alice"), alice) and _same(server.current("bob"), bob)
    assert server.loads == 2
    # Another process's forget changes the directory: the next look reads again.
    assert other.destroy("bob") == bob.key_id
    assert server.current("bob") is None
    assert _same(server.current("alice"), alice)
    assert server.loads == 4
    assert _same(server.current("alice"), alice)
    assert server.loads == 4


def test_a_key_directory_changed_within_the_settling_time_is_not_trusted(
    tmp_path: Path,
) -> None:
    """A stamp first seen less than `settled_s` ago may hide a change made in the same
    timestamp tick (coarse timestamps): every stale copy is then read again, as
    without the look."""
    server = _LoadCountingFileKeyStore(tmp_path / "keys", revalidate_s=0.0, settled_s=3600.0)
    alice = server.current_or_create("alice")
    server.loads = 0
    for expected_loads in (1, 2, 3):
        assert _same(server.current("alice"), alice)
        assert server.loads == expected_loads


# --- copying keys between stores (`autoagent migrate`) ------------------------------


def test_records_list_every_live_key_as_stored(keys: KeyStore) -> None:
    alice = keys.current_or_create("alice")
    session = keys.session_key("s1", "ana", create=True)
    assert session is not None
    keys.current_or_create("gone")
    keys.destroy("gone")
    records = keys.records()
    assert [r.owner for r in records] == ["alice", "ana", "session:s1"]
    assert records[0] == KeyRecord("alice", alice.key_id, alice.secret)
    wrapped = records[2]
    assert (wrapped.key_id, wrapped.wrapped_by) == (session.key_id, "ana")
    assert wrapped.secret != session.secret  # still wrapped with ana's key


def test_imported_records_open_what_the_source_sealed(keys: KeyStore) -> None:
    source = MemoryKeyStore()
    session = source.session_key("s1", "ana", create=True)
    assert session is not None
    token = session.seal(b"said in s1", b"ctx")
    assert [keys.import_record(r) for r in source.records()] == [True, True]
    assert keys.records() == source.records()
    opened = keys.session_key("s1", None)
    assert opened is not None and opened.open(token, b"ctx") == b"said in s1"


def test_importing_a_record_again_stores_nothing(keys: KeyStore) -> None:
    source = MemoryKeyStore()
    source.current_or_create("alice")
    (record,) = source.records()
    assert keys.import_record(record) is True
    assert keys.import_record(record) is False
    assert keys.records() == [record]


def test_importing_another_key_for_an_owner_is_refused(keys: KeyStore) -> None:
    mine = keys.current_or_create("alice")
    other = MemoryKeyStore()
    theirs = other.current_or_create("alice")
    with pytest.raises(KeyConflict) as refused:
        keys.import_record(other.records()[0])
    assert str(refused.value) == (
        f"the key store holds another key for 'alice' (key {mine.key_id}, not "
        f"{theirs.key_id}); refusing to replace it"
    )
    assert (refused.value.owner, refused.value.held) == ("alice", mine.key_id)
    kept = keys.current("alice")
    assert kept is not None and kept.secret == mine.secret


def test_erase_record_erases_only_the_named_key(keys: KeyStore) -> None:
    key = keys.current_or_create("alice")
    session = keys.session_key("s1", "alice", create=True)
    assert session is not None
    assert keys.erase_record("alice", "another-key-id") is False
    assert keys.erase_record("nobody", key.key_id) is False
    assert keys.current("alice") is not None
    assert keys.erase_record("alice", key.key_id) is True
    assert keys.current("alice") is None
    assert keys.session_key("s1", None) is None  # its wrapper is gone, cache and all


def test_records_of_another_store_on_the_backend_are_listed(open_shared: OpenStore) -> None:
    writer = open_shared()
    reader = open_shared(readonly=True)
    assert reader.records() == []
    key = writer.current_or_create("alice")
    assert reader.records() == [KeyRecord("alice", key.key_id, key.secret)]


def test_a_read_only_store_refuses_imports_and_erasures(tmp_path: Path) -> None:
    record = KeyRecord("alice", "k1", bytes(32))
    keys = FileKeyStore(tmp_path / "keys", readonly=True)
    with pytest.raises(KeyStoreReadOnly, match="read-only"):
        keys.import_record(record)
    with pytest.raises(KeyStoreReadOnly, match="read-only"):
        keys.erase_record("alice", "k1")


def test_file_records_skip_other_files_and_a_missing_directory(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path / "keys")
    assert keys.records() == []
    key = keys.current_or_create("alice")
    (tmp_path / "keys" / "notes.txt").write_text("not a key")
    (tmp_path / "keys" / "0123.tmp").write_text("{half a key")
    assert keys.records() == [KeyRecord("alice", key.key_id, key.secret)]


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        pytest.param(lambda p: p.write_bytes(b"{not json"), "is damaged: ", id="not-json"),
        pytest.param(
            lambda p: p.rename(p.with_name("0" * 64 + ".key")), "is damaged$", id="misnamed"
        ),
    ],
)
def test_a_damaged_key_file_in_records_is_named(
    tmp_path: Path, damage: Callable[[Path], object], error: str
) -> None:
    FileKeyStore(tmp_path / "keys").current_or_create("alice")
    (path,) = (tmp_path / "keys").iterdir()
    damage(path)
    (named,) = (tmp_path / "keys").iterdir()
    with pytest.raises(KeyStoreError, match=f"^the key file {re.escape(str(named))} {error}"):
        FileKeyStore(tmp_path / "keys", readonly=True).records()
