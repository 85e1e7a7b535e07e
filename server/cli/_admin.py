"""Admin commands over the event log: events tail/show/export, audit, stats.

They open the store read-only, so they work beside a running server (LMDB allows one
writer process and many readers) and on a stopped one alike.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from events import AuditReport, EventLog, OpenedReader, RecordedEvent, Sealer, audit_log
from projections import Checkpoint, MetricsProjection, projection_factories
from server._datadir import running_server
from server._render import Progress, dumps, iso_time, record_as_dict, summary, table
from server._views import memory_keys, open_base_state, open_configured_log, open_live_view
from server.app import server_tokens
from server.config import Config, config_as_dict
from server.errors import ConfigError, InputError

TAIL_DEFAULT = 20
FOLLOW_POLL_S = 0.2
HEALTH_TIMEOUT_S = 2.0  # `stats` asks a running server for /healthz


def open_readonly(config: Config) -> EventLog:
    return open_configured_log(config)


def opened(config: Config, log: EventLog) -> OpenedReader:
    """`log` with personal content opened by the data dir's keys (forgotten: marked so)."""
    return Sealer(memory_keys(config, readonly=True)).reader(log)


def _matches(record: RecordedEvent, args: argparse.Namespace) -> bool:
    if args.stream and record.stream != args.stream:
        return False
    return not (args.type and record.type != args.type)


def _print_record(record: RecordedEvent, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(dumps(record_as_dict(record)) + "\n")
    else:
        out.write(
            f"{record.position:>8}  {iso_time(record.ts)}  {record.stream}@{record.version}  "
            f"{record.type}  {summary(record.data)}\n"
        )
    out.flush()


def _tail_start(head: int, args: argparse.Namespace) -> int:
    """Where `events tail` starts reading: after --after, else a window before the head."""
    if args.after is not None:
        if args.after < 0 or args.after > head:
            raise InputError(f"--after {args.after} is out of range (head position is {head})")
        after: int = args.after
        return after
    if args.stream or args.type:
        return 0
    return max(0, head - _tail_limit(args))


def _tail_limit(args: argparse.Namespace) -> int:
    """-n: the last N events (default TAIL_DEFAULT); with --after, the first N (default all)."""
    if args.lines is None:
        return TAIL_DEFAULT if args.after is None else -1
    if args.lines < 0:
        raise InputError(f"-n {args.lines} is not a number of events (0 or more)")
    lines: int = args.lines
    return lines


def _matching(
    log: OpenedReader, after: int, until: int, args: argparse.Namespace
) -> Iterator[RecordedEvent]:
    """The records after `after` up to position `until` that pass the filters, in order."""
    while after < until and (batch := log.read(after, min(1000, until - after))):
        yield from (record for record in batch if _matches(record, args))
        after = batch[-1].position


def _backlog(log: OpenedReader, head: int, args: argparse.Namespace) -> list[RecordedEvent]:
    """What `events tail` prints before following: the first or last N matching records."""
    limit = _tail_limit(args)
    records = _matching(log, _tail_start(head, args), head, args)
    if args.after is not None:
        return list(records if limit < 0 else itertools.islice(records, limit))
    return list(collections.deque(records, maxlen=limit))


def events_tail(log: OpenedReader, args: argparse.Namespace, out: TextIO) -> int:
    """Print recent events (filtered), then with --follow every new one as it comes."""
    head, _ = log.head()
    for record in _backlog(log, head, args):
        _print_record(record, args.json, out)
    while args.follow:
        time.sleep(FOLLOW_POLL_S)
        now, _ = log.head()
        for record in _matching(log, head, now, args):
            _print_record(record, args.json, out)
        head = now
    return 0


def events_show(log: OpenedReader, args: argparse.Namespace, out: TextIO) -> int:
    head, _ = log.head()
    if args.position < 1 or args.position > head:
        raise InputError(f"no event at position {args.position} (head position is {head})")
    record = log.read(args.position - 1, 1)[0]
    if args.json:
        out.write(dumps(record_as_dict(record), indent=2) + "\n")
        return 0
    fields = record_as_dict(record)
    data = fields.pop("data")
    for key, value in fields.items():
        out.write(f"{key:>12}: {value if value is not None else '-'}\n")
    out.write(f"{'data':>12}: {dumps(data, indent=2)}\n")
    return 0


def events_export(log: OpenedReader, args: argparse.Namespace, out: TextIO) -> int:
    """Every event after --after as JSON lines, streamed in batches."""
    after = args.after or 0
    while batch := log.read(after, 1000):
        for record in batch:
            out.write(dumps(record_as_dict(record)) + "\n")
        after = batch[-1].position
    return 0


def audit(log: EventLog, args: argparse.Namespace, out: TextIO) -> int:
    """Walk the chain; exit 1 naming the first bad position."""
    progress = Progress("audit")
    report = audit_log(log, progress=progress.update)
    progress.close()
    if args.json:
        out.write(dumps(_audit_dict(report)) + "\n")
    elif report.ok:
        out.write(f"ok: {report.checked} events checked, hash chain intact\n")
    else:
        out.write(
            f"CORRUPTED at position {report.first_bad_position}: {report.problem} "
            f"({report.checked} events verified before it)\n"
        )
    return 0 if report.ok else 1


def _audit_dict(report: AuditReport) -> dict[str, object]:
    return {
        "ok": report.ok,
        "checked": report.checked,
        "head_position": report.head_position,
        "first_bad_position": report.first_bad_position,
        "problem": report.problem,
    }


def stats(log: EventLog, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    info = log.statistics()
    counts = log.type_counts()
    result: dict[str, Any] = {
        "data_dir": str(config.store.data_path.resolve()),
        "head_position": info.head_position,
        "streams": info.streams,
        "size_bytes": info.size_bytes,
        "map_size_bytes": info.map_size_bytes,
        "events_by_type": counts,
    }
    result["projections"], result["metrics"] = _projection_stats(config, log)
    result["server"] = _server_health(config)
    if args.json:
        result["config"] = config_as_dict(config)
        out.write(dumps(result, indent=2) + "\n")
        return 0
    out.write(f"data dir       {result['data_dir']}\n")
    out.write(f"head position  {info.head_position}\n")
    out.write(f"streams        {info.streams}\n")
    out.write(
        f"size           {info.size_bytes / 1e6:.1f} MB "
        f"of {info.map_size_bytes / 1e6:.0f} MB map\n\n"
    )
    out.write(_server_line(result["server"]))
    out.write(table(["event type", "count"], sorted(counts.items())) + "\n\n")
    projections = result["projections"]
    out.write(
        table(
            ["projection", "version", "on disk at", "lag"],
            [
                (p["name"], p["version"], p["persisted"], info.head_position - p["persisted"])
                for p in projections
            ],
        )
        + "\n\n"
    )
    _write_metrics(result["metrics"], out)
    return 0


def _server_health(config: Config) -> dict[str, Any] | None:
    """The running server's own view (/healthz), when a server holds the data dir.

    Only the server knows which projections stopped after a failure (they stop in its
    memory, at their last checkpoint), and what is still warming.
    """
    record = running_server(config.store.data_path)
    if record is None:
        return None
    server: dict[str, Any] = {"pid": record.pid, "url": record.url, "health": None}
    if record.url is None:
        server["error"] = "the server is starting (no URL recorded yet)"
        return server
    health_url = "http" + record.url.removeprefix("ws").rstrip("/") + "/healthz"
    request = urllib.request.Request(health_url, headers=_bearer(config))
    try:
        try:
            with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S) as response:
                server["health"] = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503 while lagging still carries the body
            if exc.code != 503:
                raise
            server["health"] = json.loads(exc.read() or b"null")
    except (OSError, ValueError) as exc:
        server["error"] = f"{health_url} did not answer: {exc}"
    return server


def _bearer(config: Config) -> dict[str, str]:
    """The Authorization header /healthz wants when the server has tokens."""
    try:
        tokens = server_tokens(config)
    except ConfigError:  # a token the server would not have started with
        return {}
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}


def _server_line(server: dict[str, Any] | None) -> str:
    if server is None:
        return "server         none running on this data dir\n\n"
    line = f"server         pid {server['pid']}, {server['url'] or 'starting'}"
    health = server.get("health")
    if not isinstance(health, dict):
        return f"{line}: {server.get('error', 'no health')}\n\n"
    line += f": {health.get('status')}"
    stopped = health.get("stopped_projections") or {}
    for name, error in sorted(stopped.items()):
        line += f"\n  projection {name} STOPPED: {error}"
    if health.get("warming"):
        line += f"\n  warming: {', '.join(health['warming'])}"
    node = health.get("node")
    if isinstance(node, dict) and (node.get("runs_taken_over") or node.get("leases_lost")):
        # Only worth a line where runs move between nodes (several on one database).
        line += (
            f"\n  node {node.get('id')}: {node.get('runs_leased', 0)} run(s) leased, "
            f"{node.get('runs_taken_over', 0)} taken over, {node.get('leases_lost', 0)} lost"
        )
    return line + "\n\n"


def _projection_stats(config: Config, log: EventLog) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Checkpoints as persisted (the lag a server has) and metrics up to the head."""
    base = open_base_state(config)
    try:
        persisted = {
            name: base.checkpoint(name) if base else Checkpoint()
            for name in projection_factories(
                config.performance.session_window, keys=memory_keys(config, readonly=True)
            )
        }
    finally:
        if base is not None:
            base.close()
    with open_live_view(config, ["metrics"], log) as view:
        metrics = view.runner.projection("metrics")
        assert isinstance(metrics, MetricsProjection)
        summary = metrics.summary()
    rows = [
        {"name": n, "version": c.version, "persisted": c.position} for n, c in persisted.items()
    ]
    return rows, summary


def _write_metrics(metrics: dict[str, Any], out: TextIO) -> None:
    rows = [
        (phase, s["count"], s["p50"], s["p95"], s["p99"], s["max"])
        for phase, s in metrics["latency_s"].items()
    ]
    out.write(table(["phase", "count", "p50 s", "p95 s", "p99 s", "max s"], rows) + "\n")
    out.write(
        f"\nLLM calls per run {metrics['llm_calls_per_run']:.2f}, tokens per run "
        f"{metrics['llm_tokens_per_run']:.0f}, cache hit rate {metrics['cache_hit_rate']:.1%}\n"
    )


Command = Callable[[EventLog, argparse.Namespace, TextIO], int]
