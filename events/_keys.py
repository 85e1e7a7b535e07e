"""Per-user memory keys, kept outside the event log, for crypto-shredding.

A memory's content and embedding are sealed (AES-256-GCM) with its user's key before
they are appended, so the append-only log only ever holds ciphertext. Forgetting a
user for good destroys the key: every record sealed with it stays in the log (the hash
chain, and so `audit`, still covers it) but can no longer be opened by anyone - not by
a replay, an export or a rebuild.

One interface, two backends: `FileKeyStore` (the server's, one small file per user
under `<data_dir>/keys/`) and `MemoryKeyStore` (tests). It lives in `projections`
because both the memory projection (which opens embeddings) and the memory agent
(which seals and opens content) need it, and projections may not import agents.

Why files and not LMDB: LMDB is copy-on-write, so a deleted value survives in a freed
page until that page is reused; a key file is overwritten with zeros, synced and then
unlinked. That removes the key from everything this program (or a copy of the data
dir) reads. It cannot promise physical erasure on SSDs, copy-on-write filesystems or
backups of the keys directory: keep that directory off backups that outlive a forget.

A user has at most one live key; `destroy` removes it and the next `current_or_create`
makes a new one with a new `key_id`, so memories sealed before a forget stay dead.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
import os
import threading
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from projections.errors import KeyStoreError, KeyStoreReadOnly, SealBroken

SEAL_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_SUFFIX = ".key"


class UserKey:
    """One user's live key: seals and opens bytes bound to a context (the AAD)."""

    __slots__ = ("_aead", "key_id", "secret", "user")

    def __init__(self, user: str, key_id: str, secret: bytes) -> None:
        self.user = user
        self.key_id = key_id
        self.secret = secret
        self._aead = AESGCM(secret)

    def __repr__(self) -> str:
        return f"UserKey(user={self.user!r}, key_id={self.key_id!r})"

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """`version (1) + nonce (12) + ciphertext+tag`; `context` must match on open."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, context)
        return bytes([SEAL_VERSION]) + nonce + sealed

    def open(self, token: bytes, context: bytes) -> bytes:
        """The plaintext of `token`; `SealBroken` if it was altered or sealed elsewhere."""
        if len(token) < 1 + NONCE_BYTES + 16 or token[0] != SEAL_VERSION:
            raise SealBroken(self.user, self.key_id, "not a sealed value of a known version")
        nonce, sealed = token[1 : 1 + NONCE_BYTES], token[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, context)
        except InvalidTag:
            raise SealBroken(self.user, self.key_id, "authentication failed") from None


class KeyStore(abc.ABC):
    """Where user keys live; sync and thread-safe (called from worker threads)."""

    readonly: bool = False

    @abc.abstractmethod
    def current(self, user: str) -> UserKey | None:
        """The user's live key, or None (never had one, or destroyed)."""

    @abc.abstractmethod
    def _create(self, user: str) -> UserKey:
        """Make and store a new key for a user who has none."""

    @abc.abstractmethod
    def _remove(self, user: str) -> None:
        """Erase the user's key (which exists)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def key(self, user: str, key_id: str) -> UserKey | None:
        """The key `key_id` of `user` if it is still live, else None (shredded)."""
        current = self.current(user)
        return current if current is not None and current.key_id == key_id else None

    def current_or_create(self, user: str) -> UserKey:
        """The user's live key, made now if there is none."""
        self._check_writable()
        with self._lock:
            return self.current(user) or self._create(user)

    def destroy(self, user: str) -> str | None:
        """Erase the user's key; returns its id (None: there was no key)."""
        self._check_writable()
        with self._lock:
            current = self.current(user)
            if current is None:
                return None
            self._remove(user)
            return current.key_id

    def _check_writable(self) -> None:
        if self.readonly:
            raise KeyStoreReadOnly("this key store is open read-only")


def _new_key(user: str) -> UserKey:
    return UserKey(user, uuid.uuid4().hex, AESGCM.generate_key(bit_length=KEY_BYTES * 8))


class MemoryKeyStore(KeyStore):
    """Keys in a dict: for tests and throw-away stores."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[str, UserKey] = {}

    def current(self, user: str) -> UserKey | None:
        return self._keys.get(user)

    def _create(self, user: str) -> UserKey:
        key = self._keys[user] = _new_key(user)
        return key

    def _remove(self, user: str) -> None:
        del self._keys[user]


class FileKeyStore(KeyStore):
    """One file per user under `path` (named by a hash of the user), mode 0600.

    The directory is created with the first key, so opening a store costs nothing and
    leaves no trace. Keys are cached in memory once read; `destroy` through this object
    drops the cached copy too (share one instance per process).
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        super().__init__()
        self.path = path
        self.readonly = readonly
        self._cache: dict[str, UserKey | None] = {}

    def _file(self, user: str) -> Path:
        return self.path / (hashlib.sha256(user.encode()).hexdigest() + KEY_SUFFIX)

    def current(self, user: str) -> UserKey | None:
        if user in self._cache:
            return self._cache[user]
        key = self._read(user)
        # Only a found key is cached: a key missing now may be created by the server
        # while a read-only reader (the CLI) is open.
        if key is not None:
            self._cache[user] = key
        return key

    def _read(self, user: str) -> UserKey | None:
        try:
            raw = self._file(user).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"cannot read the key of user {user!r}: {exc}") from exc
        try:
            data = json.loads(raw)
            secret = base64.b64decode(data["key"], validate=True)
            key = UserKey(str(data["user"]), str(data["key_id"]), secret)
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"the key file of user {user!r} is damaged: {exc}") from exc
        if key.user != user or len(secret) != KEY_BYTES:
            raise KeyStoreError(f"the key file of user {user!r} is damaged")
        return key

    def _create(self, user: str) -> UserKey:
        key = _new_key(user)
        body = json.dumps(
            {"user": user, "key_id": key.key_id, "key": base64.b64encode(key.secret).decode()}
        ).encode()
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._file(user)
        scratch = target.with_suffix(".tmp")
        try:
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(scratch, target)
            _sync_directory(self.path)
        except OSError as exc:
            raise KeyStoreError(f"cannot store a key for user {user!r}: {exc}") from exc
        self._cache[user] = key
        return key

    def _remove(self, user: str) -> None:
        # Drop the cached copy first: whatever happens below, this process never
        # opens anything with the key again.
        self._cache.pop(user, None)
        target = self._file(user)
        try:
            _overwrite(target)
            target.unlink()
            _sync_directory(self.path)
        except OSError as exc:
            raise KeyStoreError(f"cannot destroy the key of user {user!r}: {exc}") from exc


def _overwrite(path: Path) -> None:
    """Zero the file's bytes in place and sync them, before it is unlinked."""
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        os.pwrite(fd, bytes(size), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
