"""The web console at `GET /`: its files over HTTP, and the page in a real browser.

The browser tests drive Debian's `chromium` with Playwright's sync API (no
`playwright install`: the system browser, found with `shutil.which`), against a real
`autoagent serve` process on port 0. They are plain sync tests, so Playwright never
runs inside the Trio loop; the restart test reuses the port the OS gave the first
server, so the page reconnects to the same origin. Waits have timeouts; nothing
asserts on time.

Set AUTOAGENT_CONSOLE_SCREENSHOTS=1 to refresh media/console-*.png from these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from server.ws import AgentServer

from .ws_helpers import GOAL, TIMEOUT_S, http_request, serving

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on ws://[\d.]+:(\d+)")
TOKEN = "console-t0ken-0123456789abcdef0123456789"
WAIT_MS = TIMEOUT_S * 1000
HELD = '["math.calculate"]'
expect.set_options(timeout=WAIT_MS)


class ConsoleServer(AgentServer):
    """The harness's server with the console on (`agent_server` passes the config's flag)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, console=True, **kwargs)


# --- the files over HTTP -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/", "text/html; charset=utf-8", b'<script type="module" src="/console/console.js">'),
        ("/console/console.js", "text/javascript; charset=utf-8", b'stream: "$all"'),
        ("/console/console.css", "text/css; charset=utf-8", b".timeline"),
        ("/?tab=events", "text/html; charset=utf-8", b"<title>autoagent console</title>"),
    ],
    ids=["page", "module", "styles", "page-with-query"],
)
async def test_console_files_are_served_with_their_content_types(
    tmp_path: Path, path: str, content_type: str, needle: bytes
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, server_class=ConsoleServer) as app:
            status, headers, body = await http_request(app.port, "GET", path)
    assert (status, headers["content-type"]) == (200, content_type)
    assert needle in body


async def test_console_page_needs_no_token_but_health_still_does(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, tokens=(TOKEN,), server_class=ConsoleServer) as app:
            page, _, _ = await http_request(app.port, "GET", "/")
            script, _, _ = await http_request(app.port, "GET", "/console/console.js")
            health, _, _ = await http_request(app.port, "GET", "/healthz")
    assert (page, script, health) == (200, 200, 401)


async def test_console_off_answers_404_at_root(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path) as app:  # AgentServer's own default: off
            root, _, _ = await http_request(app.port, "GET", "/")
            script, _, _ = await http_request(app.port, "GET", "/console/console.js")
    assert (root, script) == (404, 404)


# --- `autoagent serve` as a process ------------------------------------------------------


class Served:
    """One `autoagent serve` process on `data_dir`; `port=0` lets the OS choose."""

    def __init__(self, tmp_path: Path, port: int = 0, **env: str) -> None:
        workspace = tmp_path / "workspace"
        workspace.mkdir(exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}
        environ |= {
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
            "AUTOAGENT_STORE__SYNC": "false",
            **env,
        }
        self.out = tmp_path / f"serve-{time.monotonic_ns()}.out"
        argv = ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
        with self.out.open("w") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", "-m", "server", *argv],
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            found = LISTENING.search(self.out.read_text())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"serve did not listen:\n{self.out.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def head_position(self) -> int:
        with urllib.request.urlopen(f"{self.url}healthz", timeout=TIMEOUT_S) as answer:
            return int(json.load(answer)["head_position"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert "Traceback" not in self.out.read_text(), self.out.read_text()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Served]]:
    """A factory of `Served`; every process it started is stopped at the end."""
    started: list[Served] = []

    class Tracked(Served):
        def __init__(self, port: int = 0, **env: str) -> None:
            super().__init__(tmp_path, port, **env)
            started.append(self)

    yield Tracked
    for served in started:
        served.stop()


def test_console_off_in_config_answers_404(serve: type[Served]) -> None:
    served = serve(AUTOAGENT_SERVER__CONSOLE="false")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(served.url, timeout=TIMEOUT_S)
    refused.value.close()
    assert refused.value.code == 404
    assert served.head_position() == 0  # and /healthz is still there


# --- the page in a browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "the console tests need Debian's chromium (make test installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 720})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == []


def ask(page: Page, goal: str) -> None:
    page.fill("#goal", goal)
    page.click("#compose button")


def wait_answer(page: Page, text: str) -> None:
    page.locator(".message.assistant .text", has_text=text).wait_for()


def live(page: Page) -> None:
    page.locator("#status.up").wait_for()


def shown_positions(page: Page, count: int) -> list[int]:
    """The positions the event browser lists, in order, once it lists `count` of them."""
    page.click(".tab[data-view=events]")
    cells = page.locator("#event-list td.pos")
    expect(cells).to_have_count(count)
    return [int(text) for text in cells.all_inner_texts()]


def screenshot(page: Page, name: str) -> None:
    if os.environ.get("AUTOAGENT_CONSOLE_SCREENSHOTS"):
        page.screenshot(path=str(ROOT / "media" / name))


@pytest.mark.slow
def test_a_goal_shows_its_steps_and_its_answer(serve: type[Served], page: Page) -> None:
    served = serve()
    page.goto(served.url)
    live(page)
    ask(page, GOAL)
    wait_answer(page, "395")
    page.locator(".run-link").first.click()
    row = page.locator(".timeline .row[data-step=s1]")
    row.locator(".bar.completed").wait_for()
    row.locator(".verdict.pass").wait_for()
    assert "math.calculate" in row.inner_text()
    assert page.locator("[data-testid=answer]").inner_text() == "17 * 23 + 4 = 395"
    assert page.locator("[data-testid=run-status]").inner_text() == "completed"
    assert "null" not in page.locator("#run-detail").inner_text()
    screenshot(page, "console-run.png")
    page.locator(".tab[data-view=events]").click()
    page.locator("#event-list td", has_text="RunCompleted").first.wait_for()
    head = served.head_position()
    assert shown_positions(page, head) == list(range(1, head + 1))
    page.locator("#event-list tr", has_text="StepCompleted").click()
    page.locator("#event-detail", has_text='"StepCompleted"').wait_for()
    detail = json.loads(page.locator("#event-detail").inner_text())
    assert detail["type"] == "StepCompleted" and detail["stream"].startswith("run-")
    assert detail["data"]["result"]["value"] == 395
    assert isinstance(detail["position"], int) and detail["ts"].endswith("Z")
    # The event with its place in the hash chain, as the log holds it.
    assert len(detail["hash"]) == 64 and len(detail["prev_hash"]) == 64
    assert detail["version"] >= 1 and detail["id"]
    page.select_option("#filter-type", "StepStarted")
    expect(page.locator("#event-list tbody tr")).to_have_count(1)
    assert "StepStarted" in page.locator("#event-list tbody tr").inner_text()


@pytest.mark.slow
def test_a_held_step_is_approved_with_its_button(serve: type[Served], page: Page) -> None:
    served = serve(AUTOAGENT_AGENTS__REQUIRE_APPROVAL=HELD)
    page.goto(served.url)
    live(page)
    ask(page, GOAL)
    page.locator(".message.pending", has_text="waiting for approval").wait_for()
    page.locator("#approval-count", has_text="1").wait_for()
    page.click(".tab[data-view=approvals]")
    held = page.locator(".approval[data-step=s1]")
    held.wait_for()
    assert "math.calculate" in held.inner_text() and "17 * 23 + 4" in held.inner_text()
    screenshot(page, "console-approval.png")
    held.locator("button.approve").click()
    page.locator("#approvals .empty").wait_for()
    page.click(".tab[data-view=chat]")
    wait_answer(page, "395")
    page.click(".tab[data-view=events]")
    page.locator("#event-list td", has_text="ApprovalGranted").wait_for()


@pytest.mark.slow
def test_a_denied_step_is_skipped(serve: type[Served], page: Page) -> None:
    served = serve(AUTOAGENT_AGENTS__REQUIRE_APPROVAL=HELD)
    page.goto(served.url)
    live(page)
    ask(page, GOAL)
    page.click(".tab[data-view=approvals]")
    page.locator(".approval[data-step=s1] button.deny").click()
    page.click(".tab[data-view=runs]")
    page.locator("#runs li").first.click()
    page.locator(".timeline .row.skipped[data-step=s1]").wait_for()
    assert "denied" in page.locator(".row[data-step=s1] .detail").inner_text()


@pytest.mark.slow
def test_reconnects_after_a_restart_without_losing_or_repeating_events(
    serve: type[Served], page: Page, browser: Browser
) -> None:
    first = serve()
    page.goto(first.url)
    live(page)
    ask(page, GOAL)
    wait_answer(page, "395")
    first.stop()
    page.locator("#status.down").wait_for()
    again = serve(first.port)  # the same data dir, and the port the OS gave the first
    live(page)
    page.click("#new-session")
    ask(page, "what is 2 + 2")
    wait_answer(page, "= 4")
    head = again.head_position()
    assert shown_positions(page, head) == list(range(1, head + 1))
    fresh = browser.new_page()
    try:
        fresh.goto(again.url)
        fresh.locator("#status.up").wait_for(timeout=WAIT_MS)
        fresh.locator(".tab[data-view=events]").click()
        expect(fresh.locator("#event-list td.pos")).to_have_count(head)
        assert [int(t) for t in fresh.locator("#event-list td.pos").all_inner_texts()] == list(
            range(1, head + 1)
        )
        fresh.locator(".tab[data-view=chat]").click()
        expect(fresh.locator("#sessions li")).to_have_count(2)
    finally:
        fresh.close()


@pytest.mark.slow
def test_a_token_entered_once_is_kept_for_the_tab(serve: type[Served], page: Page) -> None:
    served = serve(AUTOAGENT_TOKEN=TOKEN)
    page.goto(served.url)
    page.locator("#notice", has_text="token").wait_for()
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    live(page)
    page.reload()  # the same tab: the token is still there, no prompt
    live(page)
    ask(page, GOAL)
    wait_answer(page, "395")
    assert page.evaluate("sessionStorage.getItem('autoagent.token')") == TOKEN
