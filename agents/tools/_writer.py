"""The `writer` agent: `create_report` turns earlier steps' results into a markdown file.

The sources are untrusted data (web pages, emails, files): they travel to the model as
JSON values in the `report` task document, whose prompt says they are quoted data and
never instructions. The report goes into a new file in the first workspace root, named
from the title; an existing file is never overwritten, so the tool is not idempotent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from agents.errors import FileTooLarge, InvalidParameters, LLMError, ToolError
from agents.llm import LLMProvider, PromptRepository, ToolSpec, task_messages
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._context import AgentContext, positive_or
from agents.tools._workspace import DEFAULT_MAX_FILE_BYTES, Workspace, write_new

MAX_SOURCES = 50
MAX_SOURCE_CHARS = 20_000
MAX_TITLE_CHARS = 200
MAX_NAME_ATTEMPTS = 100
REPORT_SCHEMA = {
    "type": "object",
    "properties": {"markdown": {"type": "string"}},
    "required": ["markdown"],
}

CREATE_REPORT = ToolSpec(
    agent="writer",
    action="create_report",
    description=(
        "Write a markdown report that summarises the results of earlier steps (its sources) "
        "and save it as a new document."
    ),
    parameters={
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "the report's title"},
            "sources": {
                "type": "array",
                "items": {},
                "description": "results of earlier steps, e.g. ${s1}",
            },
            "path": {
                "type": "string",
                "description": "file name in the workspace (.md); default: from the title",
            },
        },
        "required": ["title", "sources"],
    },
    idempotent=False,
    keywords=("report", "write", "summarise", "summary", "markdown", "writeup"),
)


def _sources_as_list(parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    """One source given on its own (a single resolved `${s1}`) counts as a list of one."""
    sources = parameters.get("sources")
    if sources is None or isinstance(sources, list | tuple):
        return parameters
    return {**parameters, "sources": [sources]}


def _clean_title(title: str) -> str:
    cleaned = " ".join(title.split())[:MAX_TITLE_CHARS]
    if not cleaned:
        raise InvalidParameters("writer.create_report: the title is empty")
    return cleaned


def _bounded(source: Any) -> Any:
    """A source as it is, or its JSON text cut short when it is too large to send."""
    text = source if isinstance(source, str) else json.dumps(source, default=str)
    if len(text) <= MAX_SOURCE_CHARS:
        return source
    return text[:MAX_SOURCE_CHARS] + " [truncated]"


def slug(title: str) -> str:
    """A file name stem from a title: lower-case words joined by dashes."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "-".join(words)[:60].strip("-") or "report"


class CreateReportTool(Tool):
    spec = CREATE_REPORT

    def __init__(
        self,
        workspace: Workspace,
        llm: LLMProvider | None,
        prompts: PromptRepository,
        max_bytes: int,
    ) -> None:
        self._workspace = workspace
        self._llm = llm
        self._prompts = prompts
        self._max_bytes = max_bytes

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        parameters = _sources_as_list(parameters)
        require_valid(self.spec, parameters)
        title = _clean_title(parameters["title"])
        sources = list(parameters["sources"])
        if len(sources) > MAX_SOURCES:
            raise InvalidParameters(f"writer.create_report takes at most {MAX_SOURCES} sources")
        markdown = await self._compose(title, [_bounded(s) for s in sources])
        data = markdown.encode("utf-8")
        if len(data) > self._max_bytes:
            raise FileTooLarge("the report", len(data), self._max_bytes)
        name = parameters.get("path") or f"{slug(title)}.md"
        path = await trio.to_thread.run_sync(self._save, name, data)
        return {"path": path, "title": title, "bytes": len(data)}

    async def _compose(self, title: str, sources: Sequence[Any]) -> str:
        if self._llm is None:
            raise ToolError("the writer agent has no language model")
        messages = task_messages(self._prompts, "report", {"title": title, "sources": sources})
        try:
            reply = await self._llm.chat_json(messages, purpose="report", schema_hint=REPORT_SCHEMA)
        except LLMError as exc:
            raise ToolError(
                f"the report could not be written: {exc}", retryable=exc.retryable
            ) from exc
        markdown = str(reply.data["markdown"]).strip()
        if not markdown.startswith("#"):
            markdown = f"# {title}\n\n{markdown}"
        return markdown + "\n"

    def _save(self, name: str, data: bytes) -> str:
        """Write a new file named `name`, or `name-2`, `name-3`...: never overwrite one."""
        given = Path(name)
        if not given.name or given.name in (".", ".."):
            raise InvalidParameters(f"writer.create_report: {name!r} is not a file name")
        stem, suffix = given.stem, given.suffix or ".md"
        for attempt in range(1, MAX_NAME_ATTEMPTS + 1):
            candidate = given.with_name(stem + (f"-{attempt}" if attempt > 1 else "") + suffix)
            real = self._workspace.resolve(str(candidate))
            try:
                write_new(real, data)
            except FileExistsError:
                continue
            return self._workspace.display(real)
        raise ToolError(f"{MAX_NAME_ATTEMPTS} reports named like {name!r} exist already")


class WriterAgent(Agent):
    name = "writer"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (CREATE_REPORT,)

    def __init__(self, context: AgentContext) -> None:
        max_bytes = int(positive_or(context.settings.max_file_bytes, DEFAULT_MAX_FILE_BYTES))
        prompts = PromptRepository()
        prompts.load(("report",))  # agents are built in a worker thread: read it here, once
        tool = CreateReportTool(
            Workspace.of(context.workspace_roots), context.llm, prompts, max_bytes
        )
        self._tools: dict[str, Tool] = {"create_report": tool}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
