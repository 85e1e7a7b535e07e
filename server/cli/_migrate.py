"""`autoagent migrate --from SPEC --to SPEC`: copy an event log between backends.

A SPEC is `lmdb:DIR` (a data dir) or `postgres:URL`. The source is opened read-only;
the records are copied as they are stored (positions, hashes and bytes unchanged) with
`EventLog.import_records`, one transaction per batch, so the destination always holds
a prefix of the source: interrupted and run again, the copy continues after the
destination's head. A destination that is not a prefix of the source is refused before
anything is written. At the end the destination is audited (exit 1 if it fails).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from events import AuditReport, EventLog, LmdbEventLog, PostgresEventLog, audit_log
from server._datadir import running_server
from server._progress import ProgressLine
from server._render import dumps
from server.errors import InputError

DEFAULT_BATCH = 5000
_SPECS = "lmdb:DIR or postgres:URL"


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
    """How far a copy got: records written now, records the destination already held."""

    copied: int
    skipped: int
    head_position: int


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
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")


def migrate_command(args: argparse.Namespace, out: TextIO) -> int:
    source_spec = LogSpec.parse("--from", args.source)
    destination_spec = LogSpec.parse("--to", args.destination)
    if source_spec.same_as(destination_spec):
        raise InputError("--from and --to name the same log")
    if args.batch < 1:
        raise InputError(f"--batch {args.batch} is not a number of records (1 or more)")
    with open_log(source_spec, writable=False) as source:
        with open_log(destination_spec, writable=True) as destination:
            result = _copy_with_progress(source, destination, args.batch)
            if result is None:
                return 1  # interrupted: a prefix is copied, the next run continues it
            try:
                audit = _audit_with_progress(destination)
            except KeyboardInterrupt:
                print(
                    "autoagent migrate: stopped during the audit; the copy is complete "
                    "(run the command again to audit it)",
                    file=sys.stderr,
                )
                return 1
    _report(result, audit, args.json, out)
    return 0 if audit.ok else 1


@contextlib.contextmanager
def open_log(spec: LogSpec, *, writable: bool) -> Iterator[EventLog]:
    """Open the log a SPEC names; an LMDB data dir a running server holds is not
    written into (its server would not see the copied records' index)."""
    log: EventLog
    if spec.backend == "postgres":
        log = PostgresEventLog.open(spec.target, readonly=not writable)
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
) -> CopyResult:
    """Copy the source's records after the destination's head, up to the source's head
    as it is now, `batch` per transaction (at most `max_batches` of them)."""
    head, _ = source.head()
    start = check_prefix(source, destination)
    done, batches = start, 0
    while done < head and (max_batches is None or batches < max_batches):
        rows = source.read_raw(done, min(batch, head - done))
        if not rows:
            raise InputError(f"the source has no record after position {done} (head {head})")
        destination.import_records(rows)
        done, batches = rows[-1][0], batches + 1
        if progress:
            progress(done, head)
    return CopyResult(done - start, start, destination.head()[0])


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


def _copy_with_progress(source: EventLog, destination: EventLog, batch: int) -> CopyResult | None:
    """The copy's result, or None when Ctrl-C stopped it (said on stderr)."""
    progress = ProgressLine("migrate")
    try:
        return copy_log(source, destination, batch, progress.update)
    except KeyboardInterrupt:
        pass  # every batch is one transaction: the destination holds a prefix
    finally:
        progress.close()
    print(
        f"autoagent: interrupted; the destination holds records 1-{destination.head()[0]}: "
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


def _report(result: CopyResult, audit: AuditReport, as_json: bool, out: TextIO) -> None:
    if as_json:
        report = {
            "copied": result.copied,
            "skipped": result.skipped,
            "head_position": result.head_position,
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
    if audit.ok:
        out.write(f"audit ok: {audit.checked} events checked, hash chain intact\n")
    else:
        out.write(f"audit CORRUPTED at position {audit.first_bad_position}: {audit.problem}\n")
