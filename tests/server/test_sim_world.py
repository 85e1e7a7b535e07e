"""`autoagent sim` serves the bench's world beside the offline model: a deterministic
quotes endpoint and web pages on the same port, so every tool can be tried offline.

The simulator runs as a real `python -m server sim --port 0` subprocess; the server side
is `autoagent run` in-process, configured with exactly the keys the README shows.
"""

from __future__ import annotations

import io
import json
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli._main import main

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/v1")


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def sim_port() -> Iterator[int]:
    """A running `autoagent sim` on a free port; its port."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "server", "sim", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def read() -> None:
        for line in stdout:
            lines.put(line)

    pump = threading.Thread(target=read, daemon=True)
    pump.start()
    try:
        first = lines.get(timeout=START_TIMEOUT_S)
        match = URL.search(first)
        assert match, first
        assert "quotes at" in lines.get(timeout=START_TIMEOUT_S)
        yield int(match.group(1))
    finally:
        proc.kill()
        proc.communicate()
        pump.join(timeout=START_TIMEOUT_S)


def _get(port: int, target: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{target}", timeout=10) as response:
        return response.headers["content-type"], response.read()


def test_sim_serves_deterministic_quotes(sim_port: int) -> None:
    kind, body = _get(sim_port, "/quotes?symbols=NVDA,AAPL")
    assert kind == "application/json"
    quotes = json.loads(body)["quotes"]
    assert [q["symbol"] for q in quotes] == ["NVDA", "AAPL"]
    assert _get(sim_port, "/quotes?symbols=NVDA,AAPL")[1] == body
    assert all(10 <= q["price"] <= 1000 for q in quotes)


def test_sim_serves_web_pages_beside_the_model(sim_port: int) -> None:
    kind, index = _get(sim_port, "/")
    assert kind.startswith("text/html") and b'href="/news/chips"' in index
    _, page = _get(sim_port, "/news/chips")
    assert b"<title>News: chips</title>" in page
    _, models = _get(sim_port, "/v1/models")
    assert json.loads(models)["object"] == "list"


def test_sim_help_documents_its_default_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sim", "--help"])
    assert "default 8766" in " ".join(capsys.readouterr().out.split())


@pytest.fixture
def readme_settings(sim_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the README's "Every tool offline" section sets, on this port."""
    base = f"http://127.0.0.1:{sim_port}"
    monkeypatch.setenv("AUTOAGENT_AGENTS__QUOTE_ENDPOINT", f"{base}/quotes")
    monkeypatch.setenv("AUTOAGENT_AGENTS__WEB_ALLOW", '["127.0.0.1"]')
    monkeypatch.setenv("AUTOAGENT_LLM__PROVIDER", "openai")
    monkeypatch.setenv("AUTOAGENT_LLM__BASE_URL", f"{base}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sim")
    monkeypatch.delenv("AUTOAGENT_CONFIG", raising=False)


@pytest.mark.usefixtures("readme_settings")
def test_quotes_tool_answers_from_the_sim(sim_port: int, tmp_path: Path) -> None:
    _, body = _get(sim_port, "/quotes?symbols=NVDA")
    price = json.loads(body)["quotes"][0]["price"]
    data = str(tmp_path / "data")
    code, out = run_cli("run", "what is the price of NVDA", "--data-dir", data)
    assert code == 0, out
    assert f"{price}" in out


@pytest.mark.usefixtures("readme_settings")
def test_web_tool_reads_a_sim_page(sim_port: int, tmp_path: Path) -> None:
    goal = f"fetch http://127.0.0.1:{sim_port}/news/chips"
    code, out = run_cli("run", goal, "--data-dir", str(tmp_path / "data"))
    assert code == 0, out
    assert "Analysts expect demand for chips to grow this year" in out


def test_readme_names_the_sims_port_and_keys() -> None:
    readme = (ROOT / "README.md").read_text()
    for text in (
        "default 8766",
        "AUTOAGENT_AGENTS__QUOTE_ENDPOINT=http://127.0.0.1:8766/quotes",
        "AUTOAGENT_AGENTS__WEB_ALLOW='[\"127.0.0.1\"]'",
        'quote_endpoint = "http://127.0.0.1:8766/quotes"',
    ):
        assert text in readme
