"""Golden goals: the offline model's contract, run end to end.

Each golden is one or more plain-English goals (several: follow-ups in one session)
run by the real orchestrator with the offline model over the application as
`open_application` builds it: an LMDB event store and the projections in a temporary
data dir, every shipped agent, a workspace seeded with a few documents, notes and a
Maildir, and a loopback HTTP service for the quotes and the web page. Only the
embedding model is a test double (`HashEmbedder`, as in the memory and documents tests:
the real one takes seconds to load). The last goal's answer must contain each fact; a
refusal must be short (at most 300 characters as the user reads it) and say what the
planner can do. Answers that depend on the clock assert stable facts (the city and zone
named, a time of day in HH:MM:SS), never the time itself.

Left out, and why:
- "send an email to bob@example.com saying hi": `email.send` waits for a human's
  approval over the WebSocket API, so the run never ends on its own here
  (tests/approvals covers that path).
- "search the web for trio": there is no web search tool (only `web.fetch`); the
  planner reads it as a documents search of "web for trio" instead of refusing.
- "add lunch with Ann tomorrow at noon for an hour": planned as `clock.add` (the
  hour is read as an offset) instead of a calendar event.
Grow the suite with every bug found: a goal, and the facts its answer must hold.
"""

from __future__ import annotations

import json
import mailbox
import re
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import trio

from agents.embeddings._embedder import Embedder
from agents.errors import InvalidGoal
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.runs._orchestrator import RunResult
from projections import MemoryStateStore
from server.app import Application, open_application
from server.config import load_config
from tests.memory.conftest import HashEmbedder

TIMEOUT_S = 30
PRICES = {"NVDA": 912.5, "AAPL": 201.25, "MSFT": 415.0, "TSLA": 180.75}
PAGE = (
    b"<html><head><title>Trio</title></head><body><h1>Trio</h1>"
    b"<p>Trio is a friendly async library for Python.</p></body></html>"
)
REFUSAL_LIMIT = 300
# What the user reads of a refusal: the run's reason behind this prefix (`autoagent run`).
REFUSED = "I could not complete this: "
CLOCK = r"\d{2}:\d{2}:\d{2}"


@dataclass(frozen=True)
class Golden:
    """Goals run in one session; the last one's answer (or refusal) holds the facts."""

    id: str
    goals: tuple[str, ...]
    facts: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    refused: bool = False
    json_ok: bool = False  # the answer quotes a file that holds JSON


def golden(
    gid: str,
    *goals: str,
    facts: tuple[str, ...] = (),
    patterns: tuple[str, ...] = (),
    refused: bool = False,
    json_ok: bool = False,
) -> Golden:
    return Golden(gid, goals, facts, patterns, refused, json_ok)


REFUSAL = ("cannot plan this", "I can use: calendar, clock, documents, email, files")

GOLDENS = [
    # --- clock: one place, several places, no place, a zone by name, date arithmetic
    golden(
        "time-one-city",
        "what time is it in Berlin",
        facts=("The time in Berlin (Europe/Berlin) is",),
        patterns=(CLOCK,),
    ),
    golden(
        "time-two-cities",
        "what time is it in Tokyo and in New York",
        facts=("Tokyo (Asia/Tokyo)", "New York (America/New_York)"),
    ),
    golden(
        "time-three-cities",
        "what time is it in Tokyo, London and New York",
        facts=("Tokyo (Asia/Tokyo)", "London (Europe/London)", "New York (America/New_York)"),
    ),
    golden(
        "time-contraction-two-cities",
        "what's the time in Sydney and Paris",
        facts=("Sydney (Australia/Sydney)", "Paris (Europe/Paris)"),
    ),
    golden("time-no-place", "what time is it", facts=("The time in UTC is",), patterns=(CLOCK,)),
    golden(
        "date-today",
        "what is the date today",
        facts=("UTC",),
        patterns=(r"\d{4}-\d{2}-\d{2}",),
    ),
    golden(
        "time-iana-zone",
        "what time is it in America/Chicago",
        facts=("Chicago (America/Chicago)",),
    ),
    golden(
        "time-and-math",
        "what time is it in Tokyo and what is 12*12",
        facts=("Tokyo (Asia/Tokyo)", "12*12 = 144"),
    ),
    golden(
        "days-after",
        "what is 10 days after 2026-12-01",
        facts=("2026-12-11", "Friday"),
    ),
    golden(
        "weeks-after",
        "what day is 3 weeks after 2026-02-10",
        facts=("2026-03-03", "Tuesday"),
    ),
    golden(
        "days-between",
        "how many days between 2026-01-01 and 2026-03-01",
        facts=("59 days",),
    ),
    # --- math
    golden("multiply", "what is 12*12", facts=("12*12 = 144",)),
    golden("decimal", "what is 3.5 * 2", facts=("3.5 * 2 = 7.0",)),
    golden("parentheses", "calculate (17 + 5) * 3", facts=("= 66",)),
    golden("power-in-words", "what is 2 to the power of 10", facts=("= 1024",)),
    golden(
        "two-calculations",
        "what is 100 divided by 8 and what is 7 times 6",
        facts=("100 / 8 = 12.5", "7 * 6 = 42"),
    ),
    golden(
        "names-a-tool-that-does-not-exist",
        "calculate 2+2 with the supercomputer.run tool",
        facts=("2+2 = 4",),
    ),
    # --- quotes: one, several, a company name, reports, follow-ups
    golden("company-name", "what is the stock price of Apple", facts=("AAPL: 201.25 USD",)),
    golden(
        "three-tickers",
        "get the stock prices of NVDA, AAPL and MSFT",
        facts=("NVDA: 912.5 USD", "AAPL: 201.25 USD", "MSFT: 415.0 USD"),
    ),
    golden(
        "two-tickers",
        "get the price of NVDA and AAPL",
        facts=("NVDA: 912.5 USD", "AAPL: 201.25 USD"),
    ),
    golden(
        "price-then-report",
        "what is the price of TSLA then write a report",
        facts=("TSLA: 180.75 USD", "Written to: report-tsla.md"),
    ),
    golden(
        "prices-and-report",
        "get the price of NVDA and AAPL and write a report",
        facts=("NVDA: 912.5 USD", "AAPL: 201.25 USD", "Written to: report-nvda-aapl.md"),
    ),
    golden(
        "price-and-time",
        "get the price of NVDA and what time is it in New York",
        facts=("NVDA: 912.5 USD", "New York (America/New_York)"),
    ),
    golden(
        "follow-up-another-ticker",
        "what is the price of NVDA",
        "and what about AAPL?",
        facts=("AAPL: 201.25 USD",),
    ),
    golden(
        "follow-up-price-now",
        "what is the price of NVDA and AAPL",
        "and what is the price now?",
        facts=("NVDA: 912.5 USD", "AAPL: 201.25 USD"),
    ),
    golden(
        "follow-up-another-city",
        "what time is it in Tokyo",
        "and in London?",
        facts=("London (Europe/London)",),
    ),
    # --- memory: statements kept whole, abbreviations, duplicates, recall
    golden(
        "remember-title",
        "remember that my dentist is Dr. Lee",
        facts=("Remembered: my dentist is Dr. Lee.",),
    ),
    golden(
        "remember-without-that",
        "remember my dentist is Dr. Lee",
        facts=("Remembered: my dentist is Dr. Lee.",),
    ),
    golden(
        "remember-colon",
        "remember: the door code is 4711",
        facts=("Remembered: the door code is 4711.",),
    ),
    golden(
        "remember-twice",
        "remember that my dentist is Dr. Lee",
        "remember that my dentist is Dr. Lee",
        facts=("Already known: my dentist is Dr. Lee.",),
    ),
    golden(
        "remember-then-recall",
        "remember that my sister lives in Lisbon",
        "where does my sister live? recall it",
        facts=("I remember: my sister lives in Lisbon",),
    ),
    golden(
        "remember-then-recall-code",
        "remember that the door code is 4711",
        "recall the door code",
        facts=("the door code is 4711",),
    ),
    golden("recall-nothing", "recall my favourite colour", facts=("I have no memory",)),
    golden(
        "title-then-math",
        "remember that my dentist is Dr. Lee and then what is 12*12",
        facts=("Remembered: my dentist is Dr. Lee.", "12*12 = 144"),
    ),
    golden(
        "eg-ie-then-math",
        "remember that I prefer tea, e.g. green tea, i.e. no coffee. Then what is 12*12",
        facts=("Remembered: I prefer tea, e.g. green tea, i.e. no coffee.", "12*12 = 144"),
    ),
    golden(
        "us-then-decimal",
        "remember that the U.S. team meets at 9. Then what is 3.5 * 2",
        facts=("Remembered: the U.S. team meets at 9.", "3.5 * 2 = 7.0"),
    ),
    golden(
        "mr-mrs-st-then-math",
        "remember that Mr. Smith and Mrs. Smith live on St. James St. Then what is 12*12",
        facts=("Remembered: Mr. Smith and Mrs. Smith live on St. James St.", "12*12 = 144"),
    ),
    golden("forget-all", "forget everything about user alice", facts=("Forgot all",)),
    # --- documents: index, search, list, nothing relevant, nothing indexed
    golden(
        "index-and-search",
        "index the documents in docs and search the documents for pancakes need flour and milk",
        facts=("Indexed 2 document(s) from docs", "docs/recipe.txt", "Pancakes need flour"),
    ),
    golden(
        "index-then-search",
        "index the documents in docs then search the documents for how revenue grew",
        facts=("docs/report.md", "Revenue grew twelve percent"),
    ),
    golden(
        "index-and-list",
        "index docs and list the indexed documents",
        facts=("2 indexed document(s)", "docs/recipe.txt", "docs/report.md"),
    ),
    golden(
        "search-nothing-relevant",
        "index docs and search the documents for quantum chromodynamics",
        facts=("Nothing in the indexed documents is relevant to 'quantum chromodynamics'",),
    ),
    golden(
        "search-nothing-indexed",
        "search the documents for revenue",
        facts=("nothing is indexed",),
    ),
    golden(
        "index-then-search-later",
        "index the documents in docs",
        "search the documents for pancakes need flour and milk",
        facts=("docs/recipe.txt",),
    ),
    # --- files
    golden("list-workspace", "list the files in the workspace", facts=("docs", "notes.txt")),
    golden("read-file", "read notes.txt", facts=("Call the plumber on Monday",)),
    golden("write-file", "write hello world to greeting.txt", facts=("Written to: greeting.txt",)),
    golden(
        "save-then-read",
        "calculate 17*23 and save the result to result.txt",
        "read result.txt",
        facts=('"value": 391',),
        json_ok=True,
    ),
    golden("search-files", "search files for plumber", facts=("notes.txt",)),
    golden("find-files-by-glob", "find files named *.md", facts=("docs/report.md",)),
    # --- email (sending waits for approval: see the module docstring)
    golden("read-emails", "read my emails", facts=("Invoice 42", "ann@example.com")),
    golden(
        "read-emails-since",
        "read my emails since 2024-02-01",
        facts=("Invoice 42",),
    ),
    golden("search-email", "search my email for invoice", facts=("Invoice 42",)),
    golden(
        "draft-email",
        "draft an email to bob@example.com about lunch on Friday",
        facts=("Drafted an email to bob@example.com", "Lunch on Friday"),
    ),
    # --- calendar
    golden(
        "schedule-named",
        "schedule a meeting called Budget review tomorrow at 9am",
        facts=("Added 'Budget review'", "T09:00:00"),
    ),
    golden(
        "schedule-then-list",
        "schedule a dentist appointment on 2026-12-07 at 10:00 and then list my calendar "
        "events from 2026-12-01 to 2026-12-31",
        facts=(
            "Added 'Dentist appointment' from 2026-12-07T10:00:00",
            "1 event(s) from 2026-12-01T00:00:00",
            "Dentist appointment (2026-12-07T10:00:00",
        ),
    ),
    golden(
        "list-empty-calendar",
        "list my calendar events from 2030-01-01 to 2030-01-31",
        facts=("No events from 2030-01-01",),
    ),
    # --- web
    golden(
        "fetch-page",
        "fetch {page}",
        facts=("Trio is a friendly async library for Python",),
    ),
    golden(
        "fetch-and-report",
        "fetch {page} and write a report",
        facts=("Trio is a friendly async library", "Written to: "),
    ),
    # --- goals that cannot be planned: a short refusal saying what can be done
    golden(
        "unknown-place",
        "what time is it in Atlantis",
        facts=("I don't know a time zone for Atlantis", *REFUSAL),
        refused=True,
    ),
    golden(
        "unknown-beside-known-place",
        "what time is it in Tokyo and in Atlantis",
        facts=("Atlantis",),
        refused=True,
    ),
    golden("book-a-flight", "book me a flight to Paris", facts=REFUSAL, refused=True),
    golden("only-punctuation", "?!?...", facts=REFUSAL, refused=True),
    golden("other-script", "東京は何時ですか", facts=REFUSAL, refused=True),
    golden(
        "place-in-other-script",
        "what time is it in 東京",
        facts=("I don't know a time zone for 東京",),
        refused=True,
    ),
    golden(
        "a-tool-that-does-not-exist",
        "use the teleporter tool to beam me up",
        facts=REFUSAL,
        refused=True,
    ),
    golden("greeting", "hello", facts=REFUSAL, refused=True),
    golden(
        "too-many-steps",
        " and ".join(f"what is {i}*{i}" for i in range(60)),
        facts=("more than 50",),
        refused=True,
    ),
]


async def serve(request: HttpRequest) -> HttpResponse:
    """`/quotes?symbols=A,B` answers fixed prices; any other path is the Trio page."""
    split = urllib.parse.urlsplit(request.target)
    if split.path != "/quotes":
        return HttpResponse(200, (("content-type", "text/html"),), PAGE)
    symbols = urllib.parse.parse_qs(split.query).get("symbols", [""])[0].split(",")
    quotes = [{"symbol": s, "price": PRICES[s], "currency": "USD"} for s in symbols if s in PRICES]
    body = json.dumps({"quotes": quotes}).encode()
    return HttpResponse(200, (("content-type", "application/json"),), body)


def seed(workspace: Path) -> None:
    (workspace / "docs").mkdir(parents=True)
    (workspace / "docs/report.md").write_text(
        "# Quarterly report\n\nRevenue grew twelve percent in the third quarter, led by "
        "strong sales in Europe and Asia.\n\nOperating costs stayed flat."
    )
    (workspace / "docs/recipe.txt").write_text(
        "Pancakes need flour, milk, eggs and a pinch of salt. Whisk and fry in butter."
    )
    (workspace / "notes.txt").write_text("Buy oat milk. Call the plumber on Monday.\n")
    message = EmailMessage()
    message["From"], message["To"] = "ann@example.com", "me@example.com"
    message["Subject"], message["Date"] = "Invoice 42", "Fri, 01 Mar 2024 09:00:00 +0000"
    message.set_content("Please pay invoice 42.")
    mailbox.Maildir(workspace / "mail", create=True).add(message)


@asynccontextmanager
async def hash_embedder(config: object) -> AsyncIterator[Embedder]:
    yield HashEmbedder()


@asynccontextmanager
async def open_goldens_app(tmp_path: Path) -> AsyncIterator[tuple[Application, str]]:
    """The application over a seeded workspace, and the URL of the loopback web page."""
    workspace = tmp_path / "workspace"
    seed(workspace)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, serve, "127.0.0.1", 0, ConnectionCounts())
        env = {
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
            "AUTOAGENT_AGENTS__QUOTE_ENDPOINT": f"http://127.0.0.1:{port}/quotes",
            "AUTOAGENT_AGENTS__WEB_ALLOW": '["127.0.0.1"]',
            "AUTOAGENT_AGENTS__MAILBOX_PATH": str(workspace / "mail"),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "64",
        }
        config = load_config(env=env, data_dir=tmp_path / "data")
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=hash_embedder
        ) as app:
            yield app, f"http://127.0.0.1:{port}/page"
        nursery.cancel_scope.cancel()


async def run_session(tmp_path: Path, goals: tuple[str, ...]) -> RunResult:
    """Each goal in turn in one session; the last one's result."""
    async with open_goldens_app(tmp_path) as (app, page):
        session: str | None = None
        result: RunResult | None = None
        for goal in goals:
            result = await app.orchestrator.run_goal(goal.format(page=page), session)
            session = result.session_id
    assert result is not None
    return result


def test_the_suite_is_broad() -> None:
    assert len(GOLDENS) >= 60
    assert len({g.id for g in GOLDENS}) == len(GOLDENS)


@pytest.mark.parametrize("case", GOLDENS, ids=[g.id for g in GOLDENS])
async def test_golden(case: Golden, tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await run_session(tmp_path, case.goals)
    if case.refused:
        assert result.status == "failed" and result.answer is None
        said = REFUSED + (result.reason or "")
        assert len(said) <= REFUSAL_LIMIT, said
    else:
        assert result.status == "completed", result.reason
        said = result.answer or ""
        assert case.json_ok or '{"' not in said, said
    for fact in case.facts:
        assert fact in said, said
    for pattern in case.patterns:
        assert re.search(pattern, said), said


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ("what is 1+1 and " * 300 + "what is 2+2", "over the limit of 4000"),
        ("   ", "the goal must be non-empty text"),
    ],
    ids=["very-long", "blank"],
)
async def test_goals_the_orchestrator_refuses_name_why(
    goal: str, message: str, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_goldens_app(tmp_path) as (app, _):
            with pytest.raises(InvalidGoal) as caught:
                await app.orchestrator.run_goal(goal)
    assert message in str(caught.value)
