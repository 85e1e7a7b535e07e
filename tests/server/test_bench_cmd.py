"""`autoagent bench`: the scorecard's maths, its flags, its parts, and one real run end to end.

The end-to-end test starts the real command (simulator and two servers as child
processes) with tiny settings and checks the scorecard's shape and its consistency
with the servers' own counts; it never asserts a timing.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from events import (
    DocumentIndexed,
    LLMCallCompleted,
    RunCompleted,
    RunRequested,
    StepCompleted,
    StoreOptions,
    open_event_store,
)
from projections import LatencyHistogram
from server._progress import ProgressLine
from server.bench._command import phase_notes
from server.bench._config import (
    SIM_KEY_ENV,
    Endpoints,
    PhasePaths,
    phase_settings,
    to_toml,
    write_phase_config,
)
from server.bench._log import read_figures
from server.bench._processes import http_get
from server.bench._run import stats_delta
from server.bench._scenarios import SCENARIOS, scenario_named
from server.bench._scorecard import (
    ROWS,
    Witnessed,
    agrees,
    build_rows,
    disagreements,
    nearest_rank,
    ratio,
    relative_difference,
    render,
)
from server.bench._world import World, price_of
from server.cli._main import main
from server.config import Config

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = [
    "avg_response_s",
    "p95_response_s",
    "p99_response_s",
    "llm_calls_per_request",
    "tokens_per_request",
    "embedding_100_docs_s",
    "peak_rss_mb",
]
FIGURE_KEYS = {"value", "server", "client", "difference", "agree"}


# --- the maths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"), [(50, 50), (95, 95), (99, 99), (100, 100), (0.5, 1)], ids=str
)
def test_nearest_rank_of_1_to_100_is_the_value_at_that_rank(q: float, expected: float) -> None:
    values = list(range(100, 0, -1))
    assert nearest_rank(values, q) == expected


def test_nearest_rank_of_one_value_and_of_none() -> None:
    assert nearest_rank([2.5], 99) == 2.5
    assert nearest_rank([], 95) is None


@pytest.mark.parametrize("q", [0, -1, 100.5], ids=str)
def test_nearest_rank_refuses_a_percentile_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError, match="percentile must be in"):
        nearest_rank([1.0], q)


def test_nearest_rank_matches_the_metrics_histogram_within_its_bucket() -> None:
    # The server's witness reads percentiles from the metrics projection's histogram
    # (2 % buckets, upper bound reported): the same statistic, up to one bucket.
    rng = random.Random(7)
    values = [rng.lognormvariate(1.0, 0.5) for _ in range(500)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.observe(value)
    for q in (50, 95, 99):
        exact = nearest_rank(values, q)
        assert exact is not None
        assert exact <= histogram.percentile(q) <= exact * 1.02


def test_ratio_is_optimized_over_baseline() -> None:
    assert ratio(2.4, 8.0) == pytest.approx(0.3)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 8.0) is None
    assert ratio(1.0, None) is None


@pytest.mark.parametrize(
    ("server", "client", "agree"),
    [(1.04, 1.0, True), (0.951, 1.0, True), (1.06, 1.0, False), (0.9, 1.0, False)],
    ids=["4%-over", "4.9%-under", "6%-over", "10%-under"],
)
def test_agreement_is_within_5_percent_of_the_client_figure(
    server: float, client: float, agree: bool
) -> None:
    assert agrees(server, client) is agree
    difference = relative_difference(server, client)
    assert difference == pytest.approx((server - client) / client)


def test_agreement_needs_two_witnesses() -> None:
    assert agrees(None, 1.0) is None
    assert agrees(1.0, None) is None
    assert agrees(0.0, 0.0) is True
    assert relative_difference(1.0, 0.0) is None


def test_rows_carry_value_ratio_seed_target_and_whether_met() -> None:
    figures = {
        "baseline": {"avg_response_s": Witnessed(10.0, 10.2), "peak_rss_mb": Witnessed(200.0)},
        "optimized": {"avg_response_s": Witnessed(2.0, 2.2), "peak_rss_mb": Witnessed(150.0)},
    }
    rows = {row["key"]: row for row in build_rows(figures)}
    assert list(rows) == ROW_KEYS
    average = rows["avg_response_s"]
    assert average["ratio"] == pytest.approx(0.2)
    assert average["seed"] == {"baseline": 8.0, "optimized": 2.4, "ratio": pytest.approx(0.3)}
    assert average["met"] is True
    assert average["baseline"]["agree"] is True
    assert average["optimized"]["agree"] is False  # 2.0 vs 2.2: -9 %
    assert rows["peak_rss_mb"]["ratio"] == pytest.approx(0.75)
    assert rows["peak_rss_mb"]["met"] is False  # target 320 / 500 = 0.64
    assert rows["p99_response_s"]["seed"]["ratio"] is None
    assert rows["p99_response_s"]["met"] is None and rows["p99_response_s"]["ratio"] is None
    assert disagreements(list(rows.values())) == ["avg_response_s/optimized"]


def test_rendered_scorecard_flags_a_disagreement() -> None:
    figures = {"baseline": {"avg_response_s": Witnessed(1.0, 1.5)}, "optimized": {}}
    text = render(build_rows(figures))
    assert "average response time" in text and "8 s -> 2.4 s" in text
    assert "(!)" in text and "DIFFER" in text and "avg_response_s/baseline" in text
    markdown = render(build_rows(figures), markdown=True)
    assert markdown.startswith("| ") and "|:---|" in markdown


def test_every_row_with_a_seed_figure_has_its_target_ratio() -> None:
    targets = {spec.key: spec.target_ratio for spec in ROWS}
    assert targets["avg_response_s"] == pytest.approx(0.30)
    assert targets["p95_response_s"] == pytest.approx(0.30)
    assert targets["llm_calls_per_request"] == pytest.approx(0.40)
    assert targets["embedding_100_docs_s"] == pytest.approx(5 / 60)
    assert targets["peak_rss_mb"] == pytest.approx(0.64)
    assert targets["p99_response_s"] is None and targets["tokens_per_request"] is None


def test_simulator_counters_are_taken_as_differences() -> None:
    before = {
        "by_endpoint": {"/v1/chat/completions": 3, "/v1/models": 1},
        "by_purpose": {"plan": 3},
        "tokens_by_purpose": {"plan": 110},
        "by_status": {"200": 4},
        "prompt_tokens": 100,
        "completion_tokens": 10,
    }
    after = {
        "by_endpoint": {"/v1/chat/completions": 10, "/v1/models": 1, "/v1/embeddings": 2},
        "by_purpose": {"plan": 5, "answer": 5, "embed": 2},
        "tokens_by_purpose": {"plan": 200, "answer": 250, "embed": 10},
        "by_status": {"200": 16},
        "prompt_tokens": 400,
        "completion_tokens": 60,
    }
    assert stats_delta(before, after) == {
        "chat_requests": 7,
        "embedding_requests": 2,
        "tokens": 350,
        "by_purpose": {"plan": 2, "answer": 5, "embed": 2},
        "tokens_by_purpose": {"plan": 90, "answer": 250, "embed": 10},
        "by_status": {"200": 12},
    }


def test_phase_notes_say_what_finished_and_what_the_cpus_did() -> None:
    cpu = {
        "server": 91.5,
        "server_main_thread_on_cpu": 60.0,
        "server_main_thread_waiting_for_cpu": 12.2,
        "simulator": 20.0,
        "bench_clients_and_world": None,
    }
    requests = {"sent": 4, "finished": 4, "outcomes": {"RunCompleted": 3, "RunFailed": 1}}
    gaps = {"send_to_run_requested_mean": 0.0234, "terminal_event_to_client_mean": None}
    baseline = {
        "requests": requests | {"wall_s": 12.34},
        "cpu_percent_during_requests": cpu,
        "client_minus_server_s": gaps,
    }
    card = {
        "phases": {"baseline": baseline},
        "machine": {"loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [2.0, 1.5, 1.0]},
    }
    assert phase_notes(card) == [
        "baseline: 4/4 requests (3 RunCompleted, 1 RunFailed) in 12.3 s; CPU % during them: "
        "server 92 (main thread waiting for a CPU 12), simulator 20, bench —; the client's "
        "clock adds 23 ms before RunRequested and — after the terminal event (means)",
        "load average at start [1.0, 1.0, 1.0], at end [2.0, 1.5, 1.0]",
    ]


# --- flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--requests", "0"], "--requests must be a whole number from 1 to 100,000, got '0'"),
        (["--requests", "ten"], "--requests must be a whole number from 1 to 100,000, got 'ten'"),
        (["--concurrency", "0"], "--concurrency must be a whole number from 1 to 1,000, got '0'"),
        (["--time-scale", "0"], "--time-scale must be a number above 0 and at most 100, got '0'"),
        (["--time-scale", "nan"], "--time-scale must be a number above 0 and at most 100"),
        (["--seed", "-1"], "--seed must be a whole number from 0"),
        (["--scenario", "nope"], "unknown scenario 'nope'; choose one of mixed, math, prices"),
        (["--data-dir", "/nonexistent/bench"], "--data-dir must be an existing directory"),
    ],
    ids=[
        "requests-0",
        "requests-text",
        "concurrency-0",
        "scale-0",
        "scale-nan",
        "seed",
        "scenario",
        "dir",
    ],
)
def test_a_bad_flag_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert main(["bench", *argv], out=out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoagent: error: ")
    assert message in err
    assert out.getvalue() == ""


# --- the parts -------------------------------------------------------------------------------


def test_scenarios_give_the_same_requests_for_the_same_seed() -> None:
    mixed = scenario_named("mixed")
    first = mixed.requests(30, 1, "http://127.0.0.1:9")
    assert first == mixed.requests(30, 1, "http://127.0.0.1:9")
    assert first != mixed.requests(30, 2, "http://127.0.0.1:9")
    assert len(set(first[: len(mixed.templates)])) == len(mixed.templates)  # each once first
    assert all("{" not in goal for goal in first)
    assert any("http://127.0.0.1:9/news/" in goal for goal in first)
    assert set(SCENARIOS) == {"mixed", "math", "prices"}


def test_phase_config_differs_only_in_features_and_paths(tmp_path: Path) -> None:
    endpoints = Endpoints("http://127.0.0.1:1/v1", "http://127.0.0.1:2")
    loaded: dict[str, Config] = {}
    for name, features_on in (("baseline", False), ("optimized", True)):
        paths = PhasePaths(tmp_path / name)
        settings = phase_settings(Config(), features_on, paths, endpoints, concurrency=200)
        loaded[name] = write_phase_config(settings, paths)
        assert paths.config_file.read_text() == to_toml(settings)
    baseline, optimized = loaded["baseline"], loaded["optimized"]
    assert not any(vars_of(baseline.features).values())
    assert all(vars_of(optimized.features).values())
    for config in (baseline, optimized):
        assert config.llm.provider == "openai" and config.llm.base_url == endpoints.simulator_url
        assert config.llm.api_key_env == SIM_KEY_ENV
        assert config.embeddings.provider == "openai"
        assert config.agents.quote_endpoint == "http://127.0.0.1:2/quotes"
        assert "127.0.0.1" in config.agents.web_allow
        assert config.server.port == 0 and config.server.max_connections >= 216
    assert baseline.llm == optimized.llm and baseline.performance == optimized.performance
    assert baseline.store.data_dir != optimized.store.data_dir


def vars_of(section: Any) -> dict[str, Any]:
    return {name: getattr(section, name) for name in section.__dataclass_fields__}


async def test_world_answers_quotes_and_pages(nursery: trio.Nursery) -> None:
    world = World(time_scale=0.0)
    port = await nursery.start(world.serve)
    with trio.fail_after(10):
        quotes = json.loads(await http_get(port, "/quotes?symbols=NVDA,AAPL"))
        page = await http_get(port, "/news/chip-fabs")
    assert quotes == {
        "quotes": [
            {"symbol": "NVDA", "price": price_of("NVDA"), "currency": "USD"},
            {"symbol": "AAPL", "price": price_of("AAPL"), "currency": "USD"},
        ]
    }
    assert "<h1>Chip Fabs</h1>" in page
    assert world.by_route == {"quotes": 1, "news": 1}


def test_progress_writes_plain_lines_every_few_seconds_off_a_terminal() -> None:
    stream = io.StringIO()
    now = [0.0]
    progress = ProgressLine("bench: baseline", stream, every_s=2.0, clock=lambda: now[0])
    for done in range(1, 5):
        progress.update(done, 10)
        now[0] += 1.0
    progress.close()
    assert stream.getvalue().splitlines() == [
        "bench: baseline: 1/10",
        "bench: baseline: 3/10",
        "bench: baseline: 4/10",  # the last state, written by close
    ]


async def test_log_figures_leave_the_indexing_run_out_of_the_workload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_event_store(data, StoreOptions(sync=False)) as store:
        for run, seconds in (("a", 1.0), ("b", 2.0)):
            await store.append(f"run-{run}", [RunRequested(run_id=run, session_id="s", goal="g")])
            call = LLMCallCompleted(run, "plan", "m", 100, 20, seconds)
            await store.append(f"run-{run}", [call, RunCompleted(run_id=run, answer="ok")])
        await store.append("run-ix", [RunRequested(run_id="ix", session_id="s", goal="index")])
        await store.append(
            "docs-default", [DocumentIndexed("default", f"d{i}.md", "0" * 64, []) for i in range(3)]
        )
        done = StepCompleted(run_id="ix", step_id="s1", result={"counts": {}}, duration_s=4.5)
        await store.append("run-ix", [done, LLMCallCompleted("ix", "answer", "m", 9, 9, 0.1)])
        await store.append("run-ix", [RunCompleted(run_id="ix", answer="indexed")])
    figures = read_figures(data, "ix", "s1")
    counters = figures.metrics["counters"]
    assert counters["runs_requested"] == 2 and counters["llm_calls"] == 2
    assert counters["llm_tokens"] == 240
    assert figures.metrics["latency_s"]["run"]["count"] == 2
    assert figures.index_step_s == 4.5 and figures.documents_indexed == 3
    assert figures.index_run_events[0] == "RunRequested"


# --- end to end ----------------------------------------------------------------------------------


def _bench_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}


@pytest.mark.slow
def test_bench_runs_both_servers_end_to_end_and_reports_every_row(tmp_path: Path) -> None:
    argv = ["--requests", "4", "--concurrency", "2", "--time-scale", "0.01", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "server", "bench", *argv, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=_bench_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads(done.stdout)
    assert "bench: baseline requests: 4/4" in done.stderr
    assert "bench: optimized requests: 4/4" in done.stderr
    assert card["command"].startswith("autoagent bench --scenario mixed --requests 4")
    shipped = Config().llm
    assert card["settings"]["llm_budgets"] == {
        "rpm_limit": shipped.rpm_limit,
        "tpm_limit": shipped.tpm_limit,
    }
    assert [row["key"] for row in card["rows"]] == ROW_KEYS
    for row in card["rows"]:
        _check_row(row)
    for phase in ("baseline", "optimized"):
        _check_phase(card["phases"][phase], card["rows"], phase)
    assert card["phases"]["baseline"]["features"] == dict.fromkeys(
        card["phases"]["optimized"]["features"], False
    )
    assert all(card["phases"]["optimized"]["features"].values())
    assert card["disagreements"] == [
        f"{row['key']}/{phase}"
        for row in card["rows"]
        for phase in ("baseline", "optimized")
        if row[phase]["agree"] is False
    ]
    assert not list(tmp_path.iterdir())  # the temporary directory is gone


def _check_row(row: dict[str, Any]) -> None:
    assert {"key", "label", "unit", "baseline", "optimized", "ratio", "seed", "met"} <= set(row)
    for phase in ("baseline", "optimized"):
        figure = row[phase]
        assert set(figure) == FIGURE_KEYS
        assert figure["value"] is not None and figure["value"] > 0, row["key"]
        if figure["server"] is not None and figure["client"] is not None:
            difference = (figure["server"] - figure["client"]) / figure["client"]
            assert figure["difference"] == pytest.approx(difference)
            assert figure["agree"] is (abs(difference) <= 0.05)
    assert row["ratio"] == pytest.approx(row["optimized"]["value"] / row["baseline"]["value"])
    target = row["seed"]["ratio"]
    assert row["met"] is (None if target is None else row["ratio"] <= target + 1e-9)


def _check_phase(details: dict[str, Any], rows: list[dict[str, Any]], phase: str) -> None:
    by_key = {row["key"]: row[phase] for row in rows}
    requests = details["requests"]
    assert requests["sent"] == requests["finished"] == 4
    assert requests["outcomes"] == {"RunCompleted": 4} and requests["rejected"] == []
    counters = details["server_metrics"]["counters"]
    assert counters["runs_requested"] == counters["runs_completed"] == 4
    assert details["server_metrics"]["latency_s"]["run"]["count"] == 4
    # Every LLM call and token the server recorded arrived at the simulator, and only those.
    calls = by_key["llm_calls_per_request"]
    assert calls["server"] == calls["client"] == counters["llm_calls"] / 4
    assert by_key["tokens_per_request"]["server"] == by_key["tokens_per_request"]["client"]
    indexing = details["indexing"]
    assert indexing["outcome"] == "RunCompleted"
    assert indexing["documents_indexed_events"] == indexing["documents"] == 100
    assert by_key["embedding_100_docs_s"]["server"] == indexing["server_step_s"]
    memory = details["memory_mb"]
    assert 0 < memory["idle_rss"] <= memory["peak_rss"] == by_key["peak_rss_mb"]["value"]
    assert details["server_exit_code"] == 0
    # The server's /metrics counter was read: 4 small requests wait for no budget.
    assert details["llm_budget_wait_s"] == 0.0
    gaps = details["client_minus_server_s"]  # every run's RunRequested and end were seen
    assert None not in (gaps["send_to_run_requested_mean"], gaps["terminal_event_to_client_mean"])
    assert math.isfinite(requests["wall_s"])


def test_ctrl_c_stops_the_bench_its_children_and_its_files(tmp_path: Path) -> None:
    argv = ["--requests", "500", "--concurrency", "2", "--time-scale", "0.05"]
    bench = subprocess.Popen(
        [sys.executable, "-m", "server", "bench", *argv, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=_bench_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A child of a non-interactive shell may inherit SIGINT ignored; a terminal's
        # Ctrl-C never is.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert bench.stderr is not None
    try:
        for line in bench.stderr:  # wait until the baseline server is answering
            if "bench: baseline requests:" in line:
                break
        children = _children_of(bench.pid)
        assert children  # the simulator and the baseline server
        bench.send_signal(signal.SIGINT)
        _, rest = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 0, rest[-2000:]
    assert "Traceback" not in rest
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert not list(tmp_path.iterdir())


def _children_of(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found
