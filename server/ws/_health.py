"""/healthz (JSON) and /metrics (Prometheus text format) of a running server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from projections import LatencyHistogram, MetricsProjection

if TYPE_CHECKING:
    from server.ws._server import AgentServer

LE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_HEALTHY_LAG = 10_000


def _lag(app: AgentServer) -> int:
    return app.store.head_position - (
        app.runner.position if app.runner else app.store.head_position
    )


def render_health(app: AgentServer) -> tuple[int, bytes]:
    lag = _lag(app)
    body = {
        "status": "ok" if lag <= MAX_HEALTHY_LAG else "lagging",
        "store": "open",
        "head_position": app.store.head_position,
        "projections": {s.name: s.position for s in app.runner.statuses()} if app.runner else {},
        "projection_lag": lag,
        "connections": len(app.connections),
    }
    return (200 if lag <= MAX_HEALTHY_LAG else 503), json.dumps(body).encode()


def _metrics(app: AgentServer) -> MetricsProjection | None:
    if app.runner is None:
        return None
    projection = app.runner.projections.get("metrics")
    return projection if isinstance(projection, MetricsProjection) else None


def render_metrics(app: AgentServer) -> bytes:
    lines: list[str] = []
    gauge(
        lines,
        "autoagent_event_log_position",
        "Position of the last event in the log.",
        app.store.head_position,
    )
    gauge(
        lines,
        "autoagent_projection_lag_events",
        "Events the projections are behind the log.",
        _lag(app),
    )
    gauge(
        lines,
        "autoagent_connected_clients",
        "WebSocket clients connected now.",
        len(app.connections),
    )
    counter(
        lines,
        "autoagent_connections_total",
        "WebSocket connections accepted.",
        app.stats["connections_total"],
    )
    store_stats = app.store.statistics()
    counter(
        lines,
        "autoagent_event_appends_total",
        "Appends acknowledged by the writer.",
        store_stats.appends,
    )
    counter(
        lines, "autoagent_event_commits_total", "Group commits by the writer.", store_stats.commits
    )
    metrics = _metrics(app)
    if metrics is not None:
        _projection_metrics(lines, metrics)
    return ("\n".join(lines) + "\n").encode()


def _projection_metrics(lines: list[str], metrics: MetricsProjection) -> None:
    with metrics.lock:
        counters = dict(metrics.counters)
        histograms = dict(metrics.latency)
        _write_counters(lines, counters)
        phases = ", ".join(histograms)
        lines.append(f"# HELP autoagent_phase_latency_seconds Latency per phase ({phases}).")
        lines.append("# TYPE autoagent_phase_latency_seconds histogram")
        for phase, histogram in histograms.items():
            lines.extend(_histogram("autoagent_phase_latency_seconds", {"phase": phase}, histogram))


def _write_counters(lines: list[str], counters: dict[str, int]) -> None:
    names = {
        "runs_requested": "Runs requested.",
        "runs_completed": "Runs completed.",
        "runs_failed": "Runs failed.",
        "runs_cancelled": "Runs cancelled.",
        "steps_completed": "Steps completed.",
        "steps_failed": "Steps failed.",
        "steps_skipped": "Steps skipped.",
        "llm_calls": "LLM calls made.",
        "llm_tokens": "LLM tokens used (prompt + completion).",
        "llm_errors": "LLM calls that failed.",
        "llm_retries": "LLM call retries.",
    }
    for key, help_text in names.items():
        counter(lines, f"autoagent_{key}_total", help_text, counters.get(key, 0))


def _histogram(name: str, labels: dict[str, str], histogram: LatencyHistogram) -> list[str]:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    out = []
    for le in LE_BUCKETS:
        count = histogram.count_at_most(le)
        out.append(f'{name}_bucket{{{label},le="{le}"}} {count}')
    out.append(f'{name}_bucket{{{label},le="+Inf"}} {histogram.count}')
    out.append(f"{name}_sum{{{label}}} {histogram.total:.6f}")
    out.append(f"{name}_count{{{label}}} {histogram.count}")
    return out


def gauge(lines: list[str], name: str, help_text: str, value: Any) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]


def counter(lines: list[str], name: str, help_text: str, value: Any) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
