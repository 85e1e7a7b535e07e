"""Live trace export: follow the log, and when a run ends send its trace to an OTLP/HTTP
collector (`POST <telemetry.otlp_endpoint>/v1/traces`, protobuf body).

Two tasks in one nursery: the follower subscribes to the log from its head at start and
puts the id of every run that ends on a bounded channel; the exporter takes what is
queued (a batch of runs, one request), folds each run's stream into spans and posts
them, retrying with backoff on a transport error, a 429 or a 5xx. Neither ever holds up
a run: the log's subscription falls back to reading from disk when the follower lags,
so a full channel only delays the export. A collector that stays unreachable costs the
batch (logged as a warning, counted in `statistics()`), never the server.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import trio
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from events import TERMINAL_RUN_TYPES, EventStore, RecordedEvent
from server.errors import ConfigError
from server.telemetry._otlp import trace_request
from server.telemetry._spans import RUN_STREAM, RunSpan, run_id_of, run_spans
from server.telemetry.errors import TraceExportFailed

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
CONTENT_TYPE = "application/x-protobuf"
EXPORT_TIMEOUT_S = 10.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # then the batch is given up
MAX_RETRY_AFTER_S = 30.0
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
QUEUE_RUNS = 256  # runs ended and not yet taken by the exporter
MAX_BATCH_RUNS = 64  # runs in one request
FLUSH_TIMEOUT_S = 5.0
READ_BATCH = 1000


def traces_url(endpoint: str) -> str:
    """`<endpoint>/v1/traces` (kept as is when it already ends so), checked up front."""
    parsed = urllib.parse.urlsplit(endpoint.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"expected an http(s) URL such as 'http://127.0.0.1:4318', got {endpoint!r}"[:300],
            source="config",
            key="telemetry.otlp_endpoint",
        )
    base = endpoint.strip().rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


class OtlpHttpExporter:
    """Posts `ExportTraceServiceRequest`s to one collector URL, with retries."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self.url = url
        self._http = http
        self._delays = tuple(retry_delays)
        self._hurry = False
        self._backoff = trio.CancelScope()

    def stop_retrying(self) -> None:
        """From now on each request gets one attempt (a shutdown flushing what is left)."""
        self._hurry = True
        self._backoff.cancel()

    async def export(self, request: ExportTraceServiceRequest) -> None:
        """Deliver `request`, or raise `TraceExportFailed` once the retries are spent."""
        body = request.SerializeToString()
        for delay in (*self._delays, None):
            problem, wait = await self._attempt(body, delay)
            if problem is None:
                return
            if delay is None or self._hurry:
                raise TraceExportFailed(self.url, problem, retryable=True)
            log.debug("trace export to %s failed (%s); retrying in %.1f s", self.url, problem, wait)
            with trio.CancelScope() as self._backoff:
                await trio.sleep(wait)

    async def _attempt(self, body: bytes, delay: float | None) -> tuple[str | None, float]:
        """(None, 0) when delivered, else (the problem, how long to wait before the next)."""
        try:
            response = await self._http.post(
                self.url, content=body, headers={"Content-Type": CONTENT_TYPE}
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, delay or 0
        status = response.status_code
        if 200 <= status < 300:
            _log_partial_success(self.url, response.content)
            return None, 0.0
        if status not in RETRYABLE_STATUS:
            raise TraceExportFailed(self.url, f"HTTP {status}", retryable=False)
        return f"HTTP {status}", _retry_after(response, delay or 0)


def _retry_after(response: httpx.Response, default: float) -> float:
    """The collector's `Retry-After` in seconds (bounded), else `default`."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return default
    return min(seconds, MAX_RETRY_AFTER_S) if math.isfinite(seconds) and seconds >= 0 else default


def _log_partial_success(url: str, content: bytes) -> None:
    """A collector may take a request and still reject some spans: say so."""
    try:
        reply = ExportTraceServiceResponse.FromString(content)
    except DecodeError:
        return  # a 2xx with a body we cannot read still took the spans
    rejected = reply.partial_success.rejected_spans
    if rejected:
        message = reply.partial_success.error_message
        log.warning("collector %s rejected %d spans: %s", url, rejected, message)


@dataclass(frozen=True, slots=True)
class ExportStatistics:
    """What the live export did so far: runs and spans delivered, runs given up, runs
    waiting, and the last problem (empty when none)."""

    exported_runs: int
    exported_spans: int
    failed_runs: int
    pending_runs: int
    last_problem: str


class TraceExport:
    """Follows the log and exports each run's trace when the run ends."""

    def __init__(self, store: EventStore, exporter: OtlpHttpExporter) -> None:
        self._store = store
        self._exporter = exporter
        self._seen = 0
        self._pending = 0
        self._exported_runs = self._exported_spans = self._failed_runs = 0
        self._last_problem = ""
        self._progress = trio.Event()

    def statistics(self) -> ExportStatistics:
        return ExportStatistics(
            self._exported_runs,
            self._exported_spans,
            self._failed_runs,
            self._pending,
            self._last_problem,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the log from its head now; ready once subscribed."""
        send, receive = trio.open_memory_channel[str](QUEUE_RUNS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._export_loop, receive)
            start = self._seen = self._store.head_position
            task_status.started()
            async with send:
                await self._follow(start, send)

    async def _follow(self, start: int, send: trio.MemorySendChannel[str]) -> None:
        try:
            async for record in self._store.subscribe(after=start):
                run_id = run_id_of(record.stream)
                if record.type in TERMINAL_RUN_TYPES and run_id is not None:
                    self._pending += 1
                    await send.send(run_id)
                self._seen = record.position
                self._notify()
        except Exception:  # failure boundary: the traces stop, the server goes on
            log.exception("trace export stopped following the log")

    async def _export_loop(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        async with receive:
            async for run_id in receive:
                batch = [run_id]
                while len(batch) < MAX_BATCH_RUNS:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._export_batch(batch)

    async def _export_batch(self, run_ids: list[str]) -> None:
        try:
            traces = [await self._run_spans(run_id) for run_id in dict.fromkeys(run_ids)]
            await self._exporter.export(trace_request(traces))
            self._exported_runs += len(traces)
            self._exported_spans += sum(len(spans) for spans in traces)
        except TraceExportFailed as exc:
            self._failed(run_ids, str(exc))
            log.warning("%s (%d run(s) not exported)", exc, len(run_ids))
        except Exception as exc:  # failure boundary: one batch, never the server
            self._failed(run_ids, repr(exc))
            log.exception("trace export of %d run(s) failed", len(run_ids))
        finally:
            self._pending -= len(run_ids)
            self._notify()

    def _failed(self, run_ids: list[str], problem: str) -> None:
        self._failed_runs += len(run_ids)
        self._last_problem = problem

    async def _run_spans(self, run_id: str) -> list[RunSpan]:
        stream = RUN_STREAM + run_id
        records: list[RecordedEvent] = []
        while batch := await self._store.read_stream(
            stream, records[-1].version if records else 0, READ_BATCH
        ):
            records.extend(batch)
            if any(r.type in TERMINAL_RUN_TYPES for r in batch):
                break
        return run_spans(run_id, records)

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def flush(self) -> None:
        """Until every run that ended before now is exported or given up (one attempt
        each from here on: a flush happens at shutdown, and shutdown does not wait out
        an unreachable collector's backoff)."""
        self._exporter.stop_retrying()
        target = self._store.head_position
        while self._seen < target or self._pending:
            await self._progress.wait()


@asynccontextmanager
async def open_trace_export(
    store: EventStore,
    endpoint: str,
    *,
    retry_delays: Sequence[float] = RETRY_DELAYS_S,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
) -> AsyncIterator[TraceExport | None]:
    """The live export to `endpoint` while the block runs (None when `endpoint` is "").

    On a normal exit the runs that ended are still sent, within `flush_timeout_s`, so a
    one-shot `autoagent run` exports its run too.
    """
    if not endpoint:
        yield None
        return
    exporter_url = traces_url(endpoint)
    async with (
        httpx.AsyncClient(timeout=EXPORT_TIMEOUT_S) as http,
        trio.open_nursery() as nursery,
    ):
        export = TraceExport(store, OtlpHttpExporter(exporter_url, http, retry_delays))
        await nursery.start(export.run)
        yield export
        with trio.move_on_after(flush_timeout_s):
            await export.flush()
        nursery.cancel_scope.cancel()
