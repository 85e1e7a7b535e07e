"""`autoagent migrate --from SPEC --to SPEC`: copy an event log, and its sealing keys,
between backends.

A SPEC is `lmdb:DIR` (a data dir) or `postgres:URL`. The source is opened read-only;
the records are copied as they are stored (positions, hashes and bytes unchanged) with
`EventLog.import_records`, one transaction per batch, so the destination always holds
a prefix of the source: interrupted and run again, the copy continues after the
destination's head. A destination that is not a prefix of the source is refused before
anything is written. At the end the destination is audited (exit 1 if it fails).

The keys go with the log: those of `DIR/keys` (or `--from-keys`/`--to-keys`) for LMDB,
the `autoagent_keys` table of the log's database for PostgreSQL. They are copied raw
(session keys stay wrapped) and *before* the records, from a source head read before
them: a key exists before anything is sealed with it, so every copied record's key is
at the destination already, and a server started on it never meets content it cannot
open that the source could. An owner whose destination key is another one is refused
before anything is written (replacing it would shred what it sealed), unless the
records still to copy forget that key. A destroyed key is absent from the source, so
the copy never brings it back; and a forget the source made after an earlier run copied
the key is applied to the destination's keys before the batch holding its event is
imported, so an interrupted copy never holds such an event with its key still alive.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import events  # its PostgreSQL classes are imported when first named
from events import (
    AuditReport,
    EventLog,
    FileKeyStore,
    KeyRecord,
    KeyStore,
    KeyStoreMissing,
    LmdbEventLog,
    MemoryKeyDestroyed,
    MemoryKeyStore,
    SessionForgotten,
    audit_log,
    decode_record,
    session_owner,
    typed_event,
)
from server._datadir import running_server
from server._progress import ProgressLine
from server._render import dumps
from server._views import KEYS_DIR
from server.errors import InputError

DEFAULT_BATCH = 5000
_SPECS = "lmdb:DIR or postgres:URL"
_FORGET_TYPES = (b"SessionForgotten", b"MemoryKeyDestroyed")


@dataclass(frozen=True, slots=True)
class LogSpec:
    """Where a log is: `backend` "lmdb" (`target` a data dir) or "postgres" (a URL)."""

    backend: str
    target: str

    @classmethod
    def parse(cls, flag: str, text: str) -> LogSpec:
        backend, sep, target = text.partition(":")
        if not sep or backend not in ("lmdb", "postgres") or not target:
            raise InputError(f"{flag} {text!r} is not a log: expected {_SPECS}")
        return cls(backend, target)

    def same_as(self, other: LogSpec) -> bool:
        if self.backend != other.backend:
            return False
        if self.backend == "lmdb":
            return Path(self.target).resolve() == Path(other.target).resolve()
        return self.target == other.target


@dataclass(frozen=True, slots=True)
class CopyResult:
    """How far a copy got: records written now, records the destination already held,
    and destination keys erased because the copied records forget them."""

    copied: int
    skipped: int
    head_position: int
    keys_destroyed: int = 0


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """The source's keys the destination lacks, how many it holds already, and how many
    of its own keys were erased because the records still to copy forget them."""

    missing: list[KeyRecord]
    present: int
    destroyed: int


@dataclass(frozen=True, slots=True)
class Side:
    """One end of a migration: its log and the key store beside it."""

    log: EventLog
    keys: KeyStore


def add_migrate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="copy the event log between LMDB and PostgreSQL (continues an interrupted copy)",
    )
    migrate.add_argument(
        "--from", dest="source", required=True, metavar="SPEC", help=f"the log to copy: {_SPECS}"
    )
    migrate.add_argument(
        "--to", dest="destination", required=True, metavar="SPEC", help=f"where to: {_SPECS}"
    )
    migrate.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"records per transaction (default {DEFAULT_BATCH})",
    )
    for end, where in (("from", "source"), ("to", "destination")):
        migrate.add_argument(
            f"--{end}-keys",
            metavar="DIR",
            help=f"the {where}'s sealing keys when it is lmdb:DIR and they are not in DIR/keys",
        )
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")


def migrate_command(args: argparse.Namespace, out: TextIO) -> int:
    source_spec = LogSpec.parse("--from", args.source)
    destination_spec = LogSpec.parse("--to", args.destination)
    if source_spec.same_as(destination_spec):
        raise InputError("--from and --to name the same log")
    if args.batch < 1:
        raise InputError(f"--batch {args.batch} is not a number of records (1 or more)")
    for flag, keys_dir, spec in (
        ("--from-keys", args.from_keys, source_spec),
        ("--to-keys", args.to_keys, destination_spec),
    ):
        if keys_dir is not None and spec.backend != "lmdb":
            raise InputError(
                f"{flag} is for an lmdb:DIR log (PostgreSQL keeps its keys in its database)"
            )
    with open_side(source_spec, args.from_keys, writable=False) as source:
        with open_side(destination_spec, args.to_keys, writable=True) as destination:
            return _migrate(source, destination, args, out)


def _migrate(source: Side, destination: Side, args: argparse.Namespace, out: TextIO) -> int:
    check_prefix(source.log, destination.log)
    # The head before the keys: every record up to it was sealed with a key made before
    # it, so the keys read next open every record copied (or were forgotten since).
    head, _ = source.log.head()
    keys = _copy_keys_with_progress(source, destination)
    if keys is None:
        return 1  # interrupted: each key is copied whole, the next run copies the rest
    result = _copy_with_progress(source.log, destination, args.batch, head)
    if result is None:
        return 1  # interrupted: a prefix is copied, the next run continues it
    try:
        audit = _audit_with_progress(destination.log)
    except KeyboardInterrupt:
        print(
            "autoagent migrate: stopped during the audit; the copy is complete "
            "(run the command again to audit it)",
            file=sys.stderr,
        )
        return 1
    _report(result, keys, audit, args.json, out)
    return 0 if audit.ok else 1


@contextlib.contextmanager
def open_side(spec: LogSpec, keys_dir: str | None, *, writable: bool) -> Iterator[Side]:
    """The log a SPEC names and its key store (`keys_dir` instead of an LMDB data
    dir's `DIR/keys`)."""
    with (
        open_log(spec, writable=writable) as log,
        open_keys(spec, keys_dir, writable=writable) as keys,
    ):
        yield Side(log, keys)


@contextlib.contextmanager
def open_keys(spec: LogSpec, keys_dir: str | None, *, writable: bool) -> Iterator[KeyStore]:
    """The key store beside the log a SPEC names, as `serve` finds it; a PostgreSQL
    source without a keys table holds no keys (an empty store stands in)."""
    if spec.backend == "lmdb":
        path = Path(keys_dir) if keys_dir is not None else Path(spec.target) / KEYS_DIR
        yield FileKeyStore(path.expanduser().resolve(), readonly=not writable)
        return
    try:
        store = events.PostgresKeyStore.open(spec.target, readonly=not writable)
    except KeyStoreMissing:
        yield MemoryKeyStore()
        return
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def open_log(spec: LogSpec, *, writable: bool) -> Iterator[EventLog]:
    """Open the log a SPEC names; an LMDB data dir a running server holds is not
    written into (its server would not see the copied records' index)."""
    log: EventLog
    if spec.backend == "postgres":
        log = events.PostgresEventLog.open(spec.target, readonly=not writable)
    elif writable:
        holder = running_server(Path(spec.target))
        if holder is not None:
            raise InputError(
                f"{spec.target}: a running autoagent serve (pid {holder.pid}) holds this "
                "data dir; stop it before migrating into it"
            )
        log = LmdbEventLog.open(spec.target)
    else:
        log = LmdbEventLog.open(spec.target, readonly=True)
    try:
        yield log
    finally:
        log.close()


def copy_log(
    source: EventLog,
    destination: EventLog,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
    max_batches: int | None = None,
    *,
    until: int | None = None,
    keys: KeyStore | None = None,
) -> CopyResult:
    """Copy the source's records after the destination's head, up to `until` (default:
    the source's head as it is now), `batch` per transaction (at most `max_batches` of
    them). With `keys`, the destination's key store, a key the records forget is erased
    from it before they are imported."""
    head = source.head()[0] if until is None else until
    start = check_prefix(source, destination)
    done, batches, destroyed = start, 0, 0
    while done < head and (max_batches is None or batches < max_batches):
        rows = source.read_raw(done, min(batch, head - done))
        if not rows:
            raise InputError(f"the source has no record after position {done} (head {head})")
        if keys is not None:
            destroyed += sum(keys.erase_record(*key) for key in forgotten_keys(rows))
        destination.import_records(rows)
        done, batches = rows[-1][0], batches + 1
        if progress:
            progress(done, head)
    return CopyResult(done - start, start, destination.head()[0], destroyed)


def forgotten_keys(rows: Sequence[tuple[int, bytes]]) -> list[tuple[str, str]]:
    """(owner, key id) of each key a forget among these stored records destroyed."""
    found = []
    for position, raw in rows:
        # Cheap filter first: the type name sits in the envelope, never compressed.
        if not any(name in raw for name in _FORGET_TYPES):
            continue
        record = decode_record(raw, position)
        if record.type.encode() not in _FORGET_TYPES:
            continue
        match typed_event(record):
            case SessionForgotten(session_id=session_id, key_id=key_id):
                found.append((session_owner(session_id), key_id))
            case MemoryKeyDestroyed(user=user, key_id=key_id):
                found.append((user, key_id))
    return found


def prepare_keys(source: Side, destination: Side) -> KeyPlan:
    """What copying the source's keys takes, refused (nothing written yet) when the
    destination holds another key for one of their owners - unless the records still to
    copy forget that key (destroyed at the source after an earlier run copied it, the
    owner holding a new one since): then it is erased here, as that forget would."""
    records = source.keys.records()
    held = {record.owner: record for record in destination.keys.records()}
    clashes = [held[r.owner] for r in records if r.owner in held and held[r.owner] != r]
    forgotten = set(_pending_forgets(source.log, destination.log)) if clashes else set()
    for mine in clashes:
        if (mine.owner, mine.key_id) not in forgotten:
            theirs = next(r for r in records if r.owner == mine.owner)
            raise InputError(
                f"the destination's key store holds another key for {mine.owner!r} (key "
                f"{mine.key_id}; the source's is {theirs.key_id}): refusing to replace it"
            )
    destroyed = sum(destination.keys.erase_record(mine.owner, mine.key_id) for mine in clashes)
    missing = [r for r in records if held.get(r.owner) != r]
    return KeyPlan(missing, len(records) - len(missing), destroyed)


def _pending_forgets(source: EventLog, destination: EventLog) -> list[tuple[str, str]]:
    """The keys forgotten by the source's records after the destination's head."""
    done, head = destination.head()[0], source.head()[0]
    found: list[tuple[str, str]] = []
    while done < head:
        rows = source.read_raw(done, DEFAULT_BATCH)
        if not rows:
            break
        found += forgotten_keys(rows)
        done = rows[-1][0]
    return found


def check_prefix(source: EventLog, destination: EventLog) -> int:
    """The destination's head, refused unless its records are the source's first ones
    (same position and hash at its head: the hash commits to every record before)."""
    position, digest = destination.head()
    source_head, _ = source.head()
    if position > source_head:
        raise InputError(
            f"the destination holds {position} records, the source only {source_head}: "
            "it is not a copy of this log"
        )
    at = source.read_raw(position - 1, 1) if position else []
    if position and (not at or at[0][0] != position or at[0][1][: len(digest)] != digest):
        raise InputError(
            f"the destination's record {position} differs from the source's: "
            "it is not a copy of this log (refusing to write into it)"
        )
    return position


def _copy_keys_with_progress(source: Side, destination: Side) -> KeyPlan | None:
    """The keys copied (`missing`, all imported now), or None when Ctrl-C stopped it."""
    progress: ProgressLine | None = None
    try:
        plan = prepare_keys(source, destination)
        if plan.missing:
            progress = ProgressLine("keys")
        for done, record in enumerate(plan.missing, 1):
            destination.keys.import_record(record)
            if progress:
                progress.update(done, len(plan.missing))
        return plan
    except KeyboardInterrupt:
        pass  # every key is stored whole or not at all
    finally:
        if progress:
            progress.close()
    print(
        "autoagent: interrupted while copying the sealing keys (no record copied in this "
        "run): run the same command again to continue",
        file=sys.stderr,
    )
    return None


def _copy_with_progress(
    source: EventLog, destination: Side, batch: int, until: int
) -> CopyResult | None:
    """The copy's result, or None when Ctrl-C stopped it (said on stderr)."""
    progress = ProgressLine("migrate")
    try:
        return copy_log(
            source, destination.log, batch, progress.update, until=until, keys=destination.keys
        )
    except KeyboardInterrupt:
        pass  # every batch is one transaction: the destination holds a prefix
    finally:
        progress.close()
    print(
        f"autoagent: interrupted; the destination holds records 1-{destination.log.head()[0]}: "
        "run the same command again to continue",
        file=sys.stderr,
    )
    return None


def _audit_with_progress(log: EventLog) -> AuditReport:
    progress = ProgressLine("audit")
    try:
        return audit_log(log, progress=progress.update)
    finally:
        progress.close()


def _report(
    result: CopyResult, keys: KeyPlan, audit: AuditReport, as_json: bool, out: TextIO
) -> None:
    destroyed = keys.destroyed + result.keys_destroyed
    if as_json:
        report = {
            "copied": result.copied,
            "skipped": result.skipped,
            "head_position": result.head_position,
            "keys_copied": len(keys.missing),
            "keys_present": keys.present,
            "keys_destroyed": destroyed,
            "audit_ok": audit.ok,
            "first_bad_position": audit.first_bad_position,
            "problem": audit.problem,
        }
        out.write(dumps(report) + "\n")
        return
    out.write(
        f"copied {result.copied} events ({result.skipped} were already there); "
        f"destination head {result.head_position}\n"
    )
    forgotten = f"; {destroyed} destroyed, forgotten at the source since" if destroyed else ""
    out.write(
        f"copied {len(keys.missing)} sealing keys ({keys.present} were already there){forgotten}\n"
    )
    if audit.ok:
        out.write(f"audit ok: {audit.checked} events checked, hash chain intact\n")
    else:
        out.write(f"audit CORRUPTED at position {audit.first_bad_position}: {audit.problem}\n")
