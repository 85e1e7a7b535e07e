"""Sealing keys, kept outside the event log, for crypto-shredding.

Personal content is sealed (AES-256-GCM) before it is appended, so the append-only log
only ever holds ciphertext. Forgetting destroys a key: every record sealed with it
stays in the log (the hash chain, and so `audit`, still covers it) but can no longer
be opened by anyone - not by a replay, an export or a rebuild.

Two kinds of owner hold keys:
- a principal (or, for the memory tools, the user they act for): `current(name)`,
  `current_or_create(name)`, `destroy(name)`;
- a session: `session_key(session_id, principal)`. A session key is stored *wrapped*
  (sealed) with its principal's key, so destroying the principal's key makes every
  session key of that principal unopenable at once - one file erased, no list of
  sessions to walk, nothing half-forgotten if the process dies in the middle.
  `destroy_session(session_id)` forgets one session alone.

One interface, three backends: `FileKeyStore` (the server's, one small file per owner in
a directory of its own, `store.keys_dir`), `PostgresKeyStore` (`events._postgres_keys`,
shared by the nodes of one PostgreSQL event log) and `MemoryKeyStore` (tests).

Why files and not LMDB: LMDB is copy-on-write, so a deleted value survives in a freed
page until that page is reused; a key file is overwritten with zeros, synced and then
unlinked. That removes the key from everything this program (or a copy of the data
dir) reads. It cannot promise physical erasure on SSDs, copy-on-write filesystems or
backups of the keys directory: keep that directory off backups that outlive a forget.

Caching: a key read once is kept in memory. `destroy` through this object drops the
cached copy at once; a key destroyed by *another process* is noticed the next time the
cached copy is older than `revalidate_s` (the key is then read again and compared). Writes
that must reach a running server's cache (`autoagent forget`) go through that server.
A backend that can tell cheaply that nothing changed (the file store: its directory's
stamp, see `FileKeyStore`) revalidates every cached key at once instead: a server with
a hundred live sessions made a worker-thread call and a file read per session and
second for this, one look at the directory does. That look sees what this module does
to keys (a rename in, an unlink out); a key file rewritten in place, or zeroed by a
forget whose unlink then failed (the forget reports the error), is not seen by another
process's cache, and on a network filesystem the directory's attributes may be cached
by the client: keep the keys directory on a local filesystem.

An owner has at most one live key; `destroy` removes it and the next create makes a
new one with a new `key_id`, so content sealed before a forget stays dead.

Copying keys between stores (`autoagent migrate`): `records()` lists what a store holds,
as stored (session keys stay wrapped), `import_record` adds one to a store that holds
no key for its owner (never replacing another), and `erase_record` applies a forget
copied from another store. A destroyed key is absent from `records()`, so a copy never
brings it back.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.errors import KeyConflict, KeyStoreError, KeyStoreReadOnly, SealBroken

SEAL_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_SUFFIX = ".key"
SESSION_PREFIX = "session:"
DEFAULT_REVALIDATE_S = 1.0
# How long after a directory's stamp is first seen it is trusted to change with the next
# key written: longer than its timestamps' granularity (a clock tick on Linux
# filesystems, a second on some).
SETTLED_S = 2.0


class UserKey:
    """One owner's live key: seals and opens bytes bound to a context (the AAD)."""

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


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What a backend stores for one owner: the secret, or the secret sealed (wrapped)
    with the key `wrapper_id` of principal `wrapped_by`."""

    owner: str
    key_id: str
    secret: bytes
    wrapped_by: str | None = None
    wrapper_id: str | None = None


def session_owner(session_id: str) -> str:
    """The key-store name of a session's key."""
    return SESSION_PREFIX + session_id


class KeyStore(abc.ABC):
    """Where keys live; sync and thread-safe (called from worker threads)."""

    readonly: bool = False

    def __init__(self, *, revalidate_s: float = DEFAULT_REVALIDATE_S) -> None:
        self._lock = threading.RLock()
        # owner -> (key, when it was last read)
        self._cache: dict[str, tuple[UserKey, float]] = {}
        self.revalidate_s = revalidate_s

    # --- backend ---------------------------------------------------------------------

    @abc.abstractmethod
    def _load(self, owner: str) -> KeyRecord | None:
        """The stored record of `owner`, or None."""

    @abc.abstractmethod
    def _save(self, record: KeyRecord) -> None:
        """Store a new record durably."""

    @abc.abstractmethod
    def _erase(self, owner: str) -> bool:
        """Erase the record of `owner`; False when there was none."""

    @abc.abstractmethod
    def _records(self) -> list[KeyRecord]:
        """Every stored record, in any order."""

    def _save_new(self, record: KeyRecord, replacing: str | None = None) -> KeyRecord:
        """Store a freshly made `record` unless the owner already has one (other than
        the dead key `replacing`, which it replaces); return the record now stored.

        A backend several processes write at once overrides this so that two of them
        creating the same owner's key end up with one winner, returned to both. This
        default, for backends one writer owns, erases the replaced record and saves.
        """
        if replacing is not None:
            self._erase(record.owner)
        self._save(record)
        return record

    # --- principals (and memory users) ------------------------------------------------

    def current(self, user: str) -> UserKey | None:
        """The live key of a principal, or None (never had one, or destroyed)."""
        return self._get(user)

    def key(self, user: str, key_id: str) -> UserKey | None:
        """The key `key_id` of `user` if it is still live, else None (shredded)."""
        current = self.current(user)
        return current if current is not None and current.key_id == key_id else None

    def current_or_create(self, user: str) -> UserKey:
        """The principal's live key, made now if there is none."""
        self._check_writable()
        with self._lock:
            return self.current(user) or self._create(user, None)

    def destroy(self, user: str) -> str | None:
        """Erase the principal's key; returns its id (None: there was no key).

        Every session key wrapped with it becomes unopenable with it.
        """
        return self._destroy(user)

    # --- sessions --------------------------------------------------------------------

    def session_key(
        self, session_id: str, principal: str | None, *, create: bool = False
    ) -> UserKey | None:
        """The live key of a session, or None when it has none that opens (never made,
        or forgotten: its own key destroyed, or its principal's). With `create`, one is
        made now when there is none that opens, wrapped with the key of `principal`
        (created too if needed); what was sealed with a forgotten key stays dead."""
        owner = session_owner(session_id)
        found = self._get(owner)
        if found is not None or not create:
            return found
        self._check_writable()
        with self._lock:
            # One read decides: a record made by another process since `_get` opens
            # here and is used, never replaced. Its time is taken before the read (the
            # unwrap may look at the directory: see `_get`).
            checked = time.monotonic()
            record = self._load(owner)
            found = self._unwrap(record) if record is not None else None
            if found is not None:
                self._cache[owner] = (found, checked)
                return found
            # None, or a record that does not open: its principal was forgotten. What
            # the session says from now on is sealed with a new key.
            wrapper = self.current_or_create(principal) if principal else None
            return self._create(owner, wrapper, record.key_id if record else None)

    def destroy_session(self, session_id: str) -> str | None:
        """Erase one session's key; returns its id (None: there was no key)."""
        return self._destroy(session_owner(session_id))

    # --- copying between stores ------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        """Every live key as stored (session keys still wrapped), ordered by owner."""
        return sorted(self._records(), key=lambda record: record.owner)

    def import_record(self, record: KeyRecord) -> bool:
        """Store `record`, copied from another store, for an owner that holds no key;
        False when it holds this very record already (a copy run again). An owner
        holding another key raises `KeyConflict`: that key is never replaced."""
        self._check_writable()
        with self._lock:
            held = self._load(record.owner)
            if held is None:
                # `_save_new` returns the record of another process that won a race.
                held = self._save_new(record)
                if held == record:
                    return True
            if held != record:
                raise KeyConflict(record.owner, held.key_id, record.key_id)
            return False

    def erase_record(self, owner: str, key_id: str) -> bool:
        """Erase the owner's key if it is `key_id` (a forget copied from another
        store); False when the owner holds no key or another one."""
        self._check_writable()
        with self._lock:
            held = self._load(owner)
            if held is None or held.key_id != key_id:
                return False
            self._cache.clear()  # the key, and any session key it wraps
            return self._erase(owner)

    # --- shared ----------------------------------------------------------------------

    def cached(self, owner: str) -> UserKey | None:
        """The owner's key if it is cached and was checked within `revalidate_s`;
        None otherwise. Never touches the backend, so a Trio task may call it."""
        cached = self._cache.get(owner)
        if cached is not None and time.monotonic() - cached[1] < self.revalidate_s:
            return cached[0]
        return None

    def forget_cached(self) -> None:
        """Drop every cached key (they are read again from the backend when needed)."""
        with self._lock:
            self._cache.clear()

    def _unchanged_since(self, now: float) -> float | None:
        """A monotonic time since which nothing in the backend has changed, if the
        backend can tell that cheaply; None when it cannot (every key is read again).
        Called with the lock held."""
        return None

    def _get(self, owner: str) -> UserKey | None:
        cached = self._cache.get(owner)
        if cached is not None and time.monotonic() - cached[1] < self.revalidate_s:
            return cached[0]
        with self._lock:
            # Times taken under the lock: a copy checked at or after `since` was read
            # after the look that `since` comes from.
            now = time.monotonic()
            cached = self._cache.get(owner)
            since = self._unchanged_since(now)
            if cached is not None and since is not None and cached[1] >= since:
                # Nothing changed since this copy (and every other checked as late)
                # was read: all of them are current now, without reading them.
                for name, (key, checked) in list(self._cache.items()):
                    if checked >= since:
                        self._cache[name] = (key, now)
                return cached[0]
            # Read again: a forget (here or in another process) and a new key since
            # the cached one was checked must not let the old key back in.
            found = self._open(owner)
            if found is None:
                self._cache.pop(owner, None)
                return None
            self._cache[owner] = (found, now)
            return found

    def _open(self, owner: str) -> UserKey | None:
        record = self._load(owner)
        return None if record is None else self._unwrap(record)

    def _unwrap(self, record: KeyRecord) -> UserKey | None:
        owner = record.owner
        if record.wrapped_by is None:
            return UserKey(owner, record.key_id, record.secret)
        wrapper = self.current(record.wrapped_by)
        if wrapper is None or wrapper.key_id != record.wrapper_id:
            return None
        try:
            secret = wrapper.open(record.secret, owner.encode())
        except SealBroken as exc:
            raise KeyStoreError(f"the key of {owner!r} does not unwrap: {exc.reason}") from exc
        return UserKey(owner, record.key_id, secret)

    def _create(self, owner: str, wrapper: UserKey | None, replacing: str | None = None) -> UserKey:
        key: UserKey | None
        key = UserKey(owner, uuid.uuid4().hex, AESGCM.generate_key(bit_length=KEY_BYTES * 8))
        if wrapper is None:
            record = KeyRecord(owner, key.key_id, key.secret)
        else:
            wrapped = wrapper.seal(key.secret, owner.encode())
            record = KeyRecord(owner, key.key_id, wrapped, wrapper.user, wrapper.key_id)
        stored = self._save_new(record, replacing)
        if stored.key_id != record.key_id:
            # Another process made the owner's key first: everyone uses that one.
            key = self._unwrap(stored)
            if key is None:
                raise KeyStoreError(
                    f"the key of {owner!r} was just made by another process and does not "
                    "open here (its principal's key changed meanwhile); try again"
                )
        self._cache[owner] = (key, time.monotonic())
        return key

    def _destroy(self, owner: str) -> str | None:
        self._check_writable()
        with self._lock:
            # Drop the cached copies first: whatever happens below, this process never
            # opens anything with the key (or a key it wraps) again.
            self._cache.clear()
            record = self._load(owner)
            if record is None:
                return None
            self._erase(owner)
            return record.key_id

    def _check_writable(self) -> None:
        if self.readonly:
            raise KeyStoreReadOnly("this key store is open read-only")


class MemoryKeyStore(KeyStore):
    """Keys in a dict: for tests and throw-away stores."""

    def __init__(self) -> None:
        super().__init__(revalidate_s=float("inf"))  # no other process can change it
        self._stored: dict[str, KeyRecord] = {}

    def _load(self, owner: str) -> KeyRecord | None:
        return self._stored.get(owner)

    def _save(self, record: KeyRecord) -> None:
        self._stored[record.owner] = record

    def _erase(self, owner: str) -> bool:
        return self._stored.pop(owner, None) is not None

    def _records(self) -> list[KeyRecord]:
        return list(self._stored.values())


class FileKeyStore(KeyStore):
    """One file per owner under `path` (named by a hash of the owner), mode 0600.

    The directory is created with the first key, so opening a store costs nothing and
    leaves no trace.
    """

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        revalidate_s: float = DEFAULT_REVALIDATE_S,
        settled_s: float = SETTLED_S,
    ) -> None:
        super().__init__(revalidate_s=revalidate_s)
        self.path = path
        self.readonly = readonly
        self.settled_s = settled_s
        # The directory's stamp at the last look, and when that stamp was first seen.
        self._stamp: tuple[int, ...] | None = None
        self._stamp_seen = 0.0

    def _unchanged_since(self, now: float) -> float | None:
        """Since when the directory is known unchanged: every key is written by a rename
        into it and erased by an unlink from it, and both change its modification and
        change times.

        Timestamps are coarse (a clock tick on Linux filesystems, a second on some): a
        change within the same tick as the one before it may leave the stamp equal. So a
        stamp first seen at `t` proves only that nothing changed after `t + settled_s`
        (a later change lands in a later tick), and only once that time has passed; this
        uses the monotonic clock alone, never the filesystem's against this process's.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:  # no key stored yet: the directory's making changes it
            stamp: tuple[int, ...] = ()
        except OSError:
            return None
        else:
            stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            self._stamp, self._stamp_seen = stamp, now
            return None
        trusted_from = self._stamp_seen + self.settled_s
        return trusted_from if now >= trusted_from else None

    def _file(self, owner: str) -> Path:
        return self.path / (hashlib.sha256(owner.encode()).hexdigest() + KEY_SUFFIX)

    def _load(self, owner: str) -> KeyRecord | None:
        try:
            raw = self._file(owner).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"cannot read the key of {owner!r}: {exc}") from exc
        record = _parse(raw, f"the key file of {owner!r}")
        if record.owner != owner:
            raise KeyStoreError(f"the key file of {owner!r} is damaged")
        return record

    def _records(self) -> list[KeyRecord]:
        try:
            files = sorted(self.path.glob("*" + KEY_SUFFIX))
        except OSError as exc:
            raise KeyStoreError(f"cannot list the keys in {self.path}: {exc}") from exc
        records = []
        for path in files:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue  # destroyed since it was listed
            except OSError as exc:
                raise KeyStoreError(f"cannot read the key file {path}: {exc}") from exc
            record = _parse(raw, f"the key file {path}")
            # A file not named after its owner is one `_load` never finds: no live key.
            if self._file(record.owner) != path:
                raise KeyStoreError(f"the key file {path} is damaged")
            records.append(record)
        return records

    def _save(self, record: KeyRecord) -> None:
        fields: dict[str, str] = {
            "user": record.owner,
            "key_id": record.key_id,
            "key": base64.b64encode(record.secret).decode(),
        }
        if record.wrapped_by is not None and record.wrapper_id is not None:
            fields |= {"wrapped_by": record.wrapped_by, "wrapper_id": record.wrapper_id}
        body = json.dumps(fields).encode()
        target = self._file(record.owner)
        scratch = target.with_suffix(".tmp")
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(scratch, target)
            _sync_directory(self.path)
        except OSError as exc:
            raise KeyStoreError(f"cannot store a key for {record.owner!r}: {exc}") from exc

    def _erase(self, owner: str) -> bool:
        target = self._file(owner)
        scratch = target.with_suffix(".tmp")  # a copy a crash in `_save` left behind
        if scratch.exists():
            with contextlib.suppress(OSError):
                _overwrite(scratch)
                scratch.unlink()
        try:
            _overwrite(target)
            target.unlink()
            _sync_directory(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise KeyStoreError(f"cannot destroy the key of {owner!r}: {exc}") from exc
        return True


def _parse(raw: bytes, what: str) -> KeyRecord:
    """The record of a key file's bytes; `what` names the file when they are not one."""
    try:
        data = json.loads(raw)
        secret = base64.b64decode(data["key"], validate=True)
        record = KeyRecord(
            str(data["user"]),
            str(data["key_id"]),
            secret,
            data.get("wrapped_by"),
            data.get("wrapper_id"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyStoreError(f"{what} is damaged: {exc}") from exc
    if record.wrapped_by is None and len(secret) != KEY_BYTES:
        raise KeyStoreError(f"{what} is damaged")
    return record


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
