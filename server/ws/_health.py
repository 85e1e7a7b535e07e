"""/healthz (JSON) and /metrics (Prometheus text format) of a running server.

/healthz says "ok", "lagging" (projections far behind the log: 503) or "degraded" (a
projection stopped after a failure, named with its error in `stopped_projections`;
still 200, since everything else is served).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from projections import LatencyHistogram, MetricsProjection

LE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_HEALTHY_LAG = 10_000


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """What health and metrics report, taken from the server at one moment.

    Plain values, so rendering needs nothing from the server itself.
    """

    head_position: int
    projections: dict[str, int]
    projection_lag: int
    connections: int
    connections_total: int
    appends: int
    commits: int
    metrics: MetricsProjection | None
    stopped_projections: dict[str, str] = field(default_factory=dict)  # name -> error
    warming: list[str] = field(default_factory=list)  # parts still loading after start
    node_id: str = ""  # this node's id in the run leases
    runs_leased: int = 0  # runs this node holds the lease of now
    runs_taken_over: int = 0  # runs it took over after their node's lease expired
    leases_lost: int = 0  # runs it stopped because it could not keep their lease
    # The LLM rate limiter's (a provider without one, the offline model: zeros): seconds
    # calls waited for the rpm/tpm budget, and 429s the provider answered.
    llm_budget_wait_s: float = 0.0
    llm_rate_limited: int = 0
    frames_sent: int = 0  # WebSocket frames written to clients
    frame_writes: int = 0  # socket writes that carried them (frames of a batch share one)


def render_health(app: ServerSnapshot) -> tuple[int, bytes]:
    lag = app.projection_lag
    status = "lagging" if lag > MAX_HEALTHY_LAG else "degraded" if app.stopped_projections else "ok"
    body = {
        "status": status,
        "store": "open",
        "head_position": app.head_position,
        "projections": app.projections,
        "projection_lag": lag,
        "stopped_projections": app.stopped_projections,
        "warming": app.warming,
        "connections": app.connections,
        "node": {
            "id": app.node_id,
            "runs_leased": app.runs_leased,
            "runs_taken_over": app.runs_taken_over,
            "leases_lost": app.leases_lost,
        },
    }
    return (503 if status == "lagging" else 200), json.dumps(body).encode()


def render_metrics(app: ServerSnapshot) -> bytes:
    lines: list[str] = []
    gauge(
        lines,
        "autoagent_event_log_position",
        "Position of the last event in the log.",
        app.head_position,
    )
    gauge(
        lines,
        "autoagent_projection_lag_events",
        "Events the projections are behind the log.",
        app.projection_lag,
    )
    gauge(
        lines,
        "autoagent_projections_stopped",
        "Projections stopped after a failure (see /healthz).",
        len(app.stopped_projections),
    )
    gauge(
        lines,
        "autoagent_connected_clients",
        "WebSocket clients connected now.",
        app.connections,
    )
    counter(
        lines,
        "autoagent_connections_total",
        "WebSocket connections accepted.",
        app.connections_total,
    )
    counter(
        lines,
        "autoagent_ws_frames_sent_total",
        "WebSocket frames sent to clients.",
        app.frames_sent,
    )
    counter(
        lines,
        "autoagent_ws_frame_writes_total",
        "Socket writes that sent them (the frames a commit brings a client go in one).",
        app.frame_writes,
    )
    counter(
        lines,
        "autoagent_event_appends_total",
        "Appends acknowledged by the writer.",
        app.appends,
    )
    counter(lines, "autoagent_event_commits_total", "Group commits by the writer.", app.commits)
    gauge(lines, "autoagent_runs_leased", "Runs this node holds the lease of.", app.runs_leased)
    counter(
        lines,
        "autoagent_runs_taken_over_total",
        "Runs taken over from a node whose lease expired.",
        app.runs_taken_over,
    )
    counter(
        lines,
        "autoagent_run_leases_lost_total",
        "Runs stopped here because their lease could not be kept.",
        app.leases_lost,
    )
    counter(
        lines,
        "autoagent_llm_budget_wait_seconds_total",
        "Seconds LLM calls waited for the rpm/tpm budget (llm.rpm_limit, llm.tpm_limit).",
        f"{app.llm_budget_wait_s:.6f}",
    )
    counter(
        lines,
        "autoagent_llm_rate_limited_total",
        "LLM requests the provider answered 429 (rate limited).",
        app.llm_rate_limited,
    )
    if app.metrics is not None:
        _projection_metrics(lines, app.metrics)
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
