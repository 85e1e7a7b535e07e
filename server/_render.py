"""Output helpers of the command line: tables, JSON of records, progress on a terminal."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from events import RecordedEvent


def json_default(value: object) -> object:
    """JSON for what msgpack payloads may hold beyond JSON: bytes become base64."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: object, *, indent: int | None = None) -> str:
    return json.dumps(value, default=json_default, indent=indent, ensure_ascii=False)


def iso_time(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def record_as_dict(record: RecordedEvent) -> dict[str, Any]:
    """Every field of a record, JSON-ready; the shape of `events export` lines."""
    return {
        "position": record.position,
        "stream": record.stream,
        "version": record.version,
        "type": record.type,
        "schema": record.schema,
        "id": str(record.id),
        "ts": record.ts,
        "time": iso_time(record.ts),
        "correlation": record.correlation,
        "causation": record.causation,
        "data": record.data,
        "prev_hash": record.prev_hash.hex(),
        "hash": record.hash.hex(),
    }


def summary(data: dict[str, Any], width: int = 60) -> str:
    """A one-line digest of a payload for tables."""
    text = dumps(data)
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        filled = int(30 * done / total)
        bar = "#" * filled + "." * (30 - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
