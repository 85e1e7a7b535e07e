"""The key store and sealing: one conformance suite over the file and memory backends,
plus what only the file backend promises (files, modes, erasure, read-only)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from projections import (
    FileKeyStore,
    KeyStore,
    KeyStoreError,
    KeyStoreReadOnly,
    MemoryKeyStore,
    SealBroken,
)


@pytest.fixture(params=["file", "memory"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    yield FileKeyStore(tmp_path / "keys") if request.param == "file" else MemoryKeyStore()


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


def test_a_cached_session_key_is_dropped_when_another_process_forgot_its_principal(
    tmp_path: Path,
) -> None:
    """Revalidation reads the key again and compares ids: a forget and a new key made
    since (by another process) do not let the old session key back in."""
    server = FileKeyStore(tmp_path / "keys", revalidate_s=0.0)
    other = FileKeyStore(tmp_path / "keys", revalidate_s=0.0)
    session = server.session_key("s1", "ana", create=True)
    assert session is not None and server.session_key("s1", None) is not None
    assert other.destroy("ana") is not None
    other.current_or_create("ana")  # a new principal key, with another id
    assert server.session_key("s1", None) is None
    renewed = server.session_key("s1", "ana", create=True)
    assert renewed is not None and renewed.key_id != session.key_id
