"""The `email` agent: read and search a local mailbox, draft into an outbox, send by SMTP.

The mailbox is a Maildir (a folder with `cur/` and `new/`) or an mbox file, read with the
stdlib `mailbox` module: `agents.mailbox_path` (trusted configuration), or a `mailbox`
a step names, which must lie inside the workspace and may not hold symlinks. Drafts go
into the outbox Maildir (`agents.outbox_path`, inside the workspace) flagged as drafts;
`send` speaks SMTP to `agents.smtp_host` when one is configured. Messages are untrusted
data: bodies come back as bounded plain text, never as instructions. Blocking work (disk,
SMTP) runs in `trio.to_thread`.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import html
import mailbox
import os
import re
import smtplib
from collections.abc import Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trio

from agents.errors import FileTooLarge, InvalidParameters, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._clock import as_utc, parse_moment
from agents.tools._context import AgentContext, positive_or
from agents.tools._workspace import DEFAULT_MAX_FILE_BYTES, Workspace, deliver_maildir

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
MAX_SCANNED = 5000
MAX_BODY_CHARS = 4000
MAX_RECIPIENTS = 50
MAX_SUBJECT_CHARS = 500
SMTP_TIMEOUT_S = 15.0
DEFAULT_OUTBOX = "outbox"
DEFAULT_SENDER = "autoagent@localhost"

_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")

_MOMENT = {"type": "string", "description": "ISO 8601 date or date-time"}
_RANGE = {
    "since": _MOMENT | {"description": "received at or after (ISO 8601)"},
    "until": _MOMENT | {"description": "received before; a date includes that whole day"},
    "limit": {"type": "integer", "description": f"most emails to return (1-{MAX_LIMIT})"},
    "mailbox": {"type": "string", "description": "a Maildir or mbox in the workspace"},
}
_MESSAGE = {
    "to": {"type": "string", "description": "addresses, separated by commas"},
    "subject": {"type": "string"},
    "body": {"type": "string", "description": "plain text"},
    "cc": {"type": "string", "description": "addresses, separated by commas"},
}

READ = ToolSpec(
    agent="email",
    action="read",
    description="Read the emails received in a time range from the mailbox, newest first.",
    parameters={"type": "object", "properties": dict(_RANGE), "required": []},
    idempotent=True,
    keywords=("email", "emails", "inbox", "mail", "mailbox", "received", "unread", "list"),
)
SEARCH = ToolSpec(
    agent="email",
    action="search",
    description="Search the mailbox for emails whose subject, sender, recipients or body "
    "contain a text.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "text to find"}, **_RANGE},
        "required": ["query"],
    },
    idempotent=True,
    keywords=("email", "emails", "inbox", "mail", "search", "find"),
)
DRAFT = ToolSpec(
    agent="email",
    action="draft",
    description="Write an email draft into the outbox folder without sending it.",
    parameters={
        "type": "object",
        "properties": dict(_MESSAGE),
        "required": ["to", "subject", "body"],
    },
    idempotent=False,
    keywords=("draft", "compose", "write", "email", "mail"),
)
SEND = ToolSpec(
    agent="email",
    action="send",
    description="Send an email through the configured SMTP server.",
    parameters={
        "type": "object",
        "properties": dict(_MESSAGE),
        "required": ["to", "subject", "body"],
    },
    idempotent=False,
    keywords=("send", "email", "mail"),
    # Mail that leaves the machine cannot be taken back: a human approves each send.
    requires_approval=True,
)


# --- reading ----------------------------------------------------------------------------


class _Mailbox:
    """Where emails are read from: the configured mailbox, or one inside the workspace."""

    def __init__(self, workspace: Workspace, configured: str, max_bytes: int) -> None:
        self._workspace = workspace
        self._configured = configured
        self.max_bytes = max_bytes

    def open(self, given: str | None) -> mailbox.Mailbox[Any]:
        if given:
            path = self._workspace.resolve(given)
            _refuse_links(path)
        elif self._configured:
            path = Path(self._configured).expanduser()
        else:
            raise ToolError(
                "no mailbox is configured (set agents.mailbox_path, or name a mailbox "
                "inside the workspace)"
            )
        return _open_mailbox(path)


def _open_mailbox(path: Path) -> mailbox.Mailbox[Any]:
    if path.is_dir():
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise ToolError(f"{path.name} is a folder but not a Maildir (no cur/ or new/)")
        return mailbox.Maildir(path, create=False)
    if path.is_file():
        return mailbox.mbox(path, create=False)
    raise ToolError(f"no mailbox at {path.name}")


def _refuse_links(path: Path) -> None:
    """A workspace Maildir whose message files are symlinks could read any file: refused."""
    if not path.is_dir():
        return
    for sub in ("cur", "new", "tmp"):
        folder = path / sub
        if folder.is_symlink():
            raise ToolError(f"{path.name}/{sub} is a symlink; refused")
        if folder.is_dir():
            with os.scandir(folder) as entries:
                if any(entry.is_symlink() for entry in entries):
                    raise ToolError(f"{path.name}/{sub} holds symlinks; refused")


def _messages(box: mailbox.Mailbox[Any], max_bytes: int) -> Iterator[tuple[str, EmailMessage]]:
    """(key, parsed message) for at most MAX_SCANNED messages; oversized bodies cut off."""
    for count, key in enumerate(box.iterkeys()):
        if count == MAX_SCANNED:
            return
        try:
            data = box.get_bytes(key)
        except (KeyError, OSError):
            continue  # removed or unreadable since listing
        yield str(key), _parse(data, max_bytes)


def _parse(data: bytes, max_bytes: int) -> EmailMessage:
    message = email.message_from_bytes(data[:max_bytes], policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _received(message: EmailMessage) -> dt.datetime | None:
    try:
        return as_utc(email.utils.parsedate_to_datetime(str(message["Date"])))
    except (TypeError, ValueError, IndexError):
        return None


def _body(message: EmailMessage) -> str:
    """The plain-text body (HTML reduced to its text); empty when there is none."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
        content = part.get_content() if part is not None else ""
    except (LookupError, ValueError, AttributeError):
        return ""
    text = str(content)
    if part is not None and part.get_content_type() == "text/html":
        text = html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", text)))
        text = re.sub(r"[ \t]+", " ", text)
    return text.strip()


def _header(message: EmailMessage, name: str) -> str:
    try:
        return str(message.get(name, ""))
    except (ValueError, IndexError):
        return ""


def _summary(key: str, message: EmailMessage, received: dt.datetime | None) -> dict[str, Any]:
    body = _body(message)
    attachments = [part.get_filename() or "" for part in message.iter_attachments()]
    return {
        "id": key,
        "date": received.isoformat(timespec="seconds") if received else None,
        "from": _header(message, "From"),
        "to": _header(message, "To"),
        "cc": _header(message, "Cc"),
        "subject": _header(message, "Subject"),
        "body": body[:MAX_BODY_CHARS],
        "body_truncated": len(body) > MAX_BODY_CHARS,
        "attachments": attachments,
    }


def _time_range(parameters: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    since = parameters.get("since")
    until = parameters.get("until")
    start = as_utc(parse_moment(since, "since")) if since else None
    end = None
    if until:
        moment = parse_moment(until, "until")
        whole_day = dt.timedelta(days=0 if isinstance(moment, dt.datetime) else 1)
        end = as_utc(moment) + whole_day
    if start and end and end <= start:
        raise InvalidParameters("email: 'until' must be after 'since'")
    return start, end


def _limit(parameters: Mapping[str, Any]) -> int:
    limit = parameters.get("limit", DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidParameters(f"limit must be 1 to {MAX_LIMIT}, got {limit}")
    return int(limit)


def _in_range(
    received: dt.datetime | None, start: dt.datetime | None, end: dt.datetime | None
) -> bool:
    if start is None and end is None:
        return True
    if received is None:
        return False  # undated mail cannot be placed in a range
    return (start is None or received >= start) and (end is None or received < end)


def _mentions(message: EmailMessage, wanted: str) -> bool:
    fields = [_header(message, name) for name in ("Subject", "From", "To", "Cc")]
    return any(wanted in text.casefold() for text in [*fields, _body(message)])


class _ReadingTool(Tool):
    def __init__(self, source: _Mailbox) -> None:
        self._source = source

    async def _collect(self, parameters: Mapping[str, Any], query: str) -> dict[str, Any]:
        start, end = _time_range(parameters)
        limit = _limit(parameters)
        return await trio.to_thread.run_sync(
            self._scan, parameters.get("mailbox"), query.casefold(), start, end, limit
        )

    def _scan(
        self,
        given: str | None,
        wanted: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        limit: int,
    ) -> dict[str, Any]:
        box = self._source.open(given)
        found: list[tuple[dt.datetime | None, str, EmailMessage]] = []
        try:
            for key, message in _messages(box, self._source.max_bytes):
                received = _received(message)
                if _in_range(received, start, end) and (not wanted or _mentions(message, wanted)):
                    found.append((received, key, message))
        finally:
            box.close()
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
        found.sort(key=lambda item: item[0] or oldest, reverse=True)
        emails = [_summary(key, message, received) for received, key, message in found[:limit]]
        return {"emails": emails, "count": len(emails), "truncated": len(found) > limit}


class ReadTool(_ReadingTool):
    spec = READ

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        return await self._collect(parameters, "")


class SearchTool(_ReadingTool):
    spec = SEARCH

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        query = parameters["query"].strip()
        if not query:
            raise InvalidParameters("email.search: the query is empty")
        return await self._collect(parameters, query)


# --- writing and sending ----------------------------------------------------------------


def addresses(value: str, field: str) -> list[str]:
    """Comma- or semicolon-separated addresses, each `a@b.c` or `Name <a@b.c>`."""
    if "\r" in value or "\n" in value:
        raise InvalidParameters(f"email: {field!r} may not contain line breaks")
    found: list[str] = []
    for item in filter(None, (part.strip() for part in re.split(r"[,;]", value))):
        name, address = email.utils.parseaddr(item)
        if not _ADDRESS.match(address):
            raise InvalidParameters(f"email: {field!r} has an invalid address: {item!r}")
        found.append(email.utils.formataddr((name, address)))
    if len(found) > MAX_RECIPIENTS:
        raise InvalidParameters(f"email: at most {MAX_RECIPIENTS} addresses in {field!r}")
    return found


def compose(sender: str, parameters: Mapping[str, Any], max_bytes: int) -> EmailMessage:
    """The message of a draft or send step, its parameters checked first."""
    to = addresses(parameters["to"], "to")
    if not to:
        raise InvalidParameters("email: 'to' names no address")
    cc = addresses(parameters.get("cc") or "", "cc")
    subject = " ".join(str(parameters["subject"]).split())
    if len(subject) > MAX_SUBJECT_CHARS:
        raise InvalidParameters(f"email: the subject is longer than {MAX_SUBJECT_CHARS} characters")
    body = str(parameters["body"])
    if len(body.encode("utf-8")) > max_bytes:
        raise FileTooLarge("the body", len(body.encode("utf-8")), max_bytes)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    return message


def _described(message: EmailMessage) -> dict[str, Any]:
    return {
        "message_id": str(message["Message-ID"]),
        "to": str(message["To"]),
        "cc": str(message.get("Cc", "")),
        "subject": str(message["Subject"]),
    }


class DraftTool(Tool):
    spec = DRAFT

    def __init__(self, workspace: Workspace, outbox: str, sender: str, max_bytes: int) -> None:
        self._workspace = workspace
        self._outbox = outbox
        self._sender = sender
        self._max_bytes = max_bytes

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        message = compose(self._sender, parameters, self._max_bytes)
        key, path = await trio.to_thread.run_sync(self._save, message)
        return {"status": "drafted", "id": key, "outbox": path} | _described(message)

    def _save(self, message: EmailMessage) -> tuple[str, str]:
        real = self._workspace.resolve(self._outbox)
        key = deliver_maildir(real, message.as_bytes(), flags="D")
        return key, self._workspace.display(real)


class SendTool(Tool):
    spec = SEND

    def __init__(self, host: str, port: int, sender: str, max_bytes: int) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._max_bytes = max_bytes

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        message = compose(self._sender, parameters, self._max_bytes)
        if not self._host:
            raise ToolError(
                "sending email is not configured (set agents.smtp_host); "
                "email.draft saves a draft instead"
            )
        refused = await trio.to_thread.run_sync(self._send, message)
        return {"status": "sent", "refused": sorted(refused)} | _described(message)

    def _send(self, message: EmailMessage) -> dict[str, Any]:
        """SMTP errors as ToolErrors: a refusal is final, a lost connection may pass later."""
        try:
            with smtplib.SMTP(self._host, self._port, timeout=SMTP_TIMEOUT_S) as smtp:
                return dict(smtp.send_message(message))
        except smtplib.SMTPRecipientsRefused as exc:
            raise ToolError(f"the SMTP server refused every recipient: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            retryable = 400 <= exc.smtp_code < 500
            raise ToolError(
                f"the SMTP server answered {exc.smtp_code}: {exc.smtp_error!r}", retryable=retryable
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            where = f"{self._host}:{self._port}"
            raise ToolError(f"cannot send through {where}: {exc!r}", retryable=True) from exc


class EmailAgent(Agent):
    name = "email"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (READ, SEARCH, DRAFT, SEND)

    def __init__(self, context: AgentContext) -> None:
        settings = context.settings
        workspace = Workspace.of(context.workspace_roots)
        max_bytes = int(positive_or(settings.max_file_bytes, DEFAULT_MAX_FILE_BYTES))
        sender = settings.email_from or DEFAULT_SENDER
        source = _Mailbox(workspace, settings.mailbox_path, max_bytes)
        outbox = settings.outbox_path or DEFAULT_OUTBOX
        host, port = settings.smtp_host, int(positive_or(settings.smtp_port, 25))
        self._tools: dict[str, Tool] = {
            "read": ReadTool(source),
            "search": SearchTool(source),
            "draft": DraftTool(workspace, outbox, sender, max_bytes),
            "send": SendTool(host, port, sender, max_bytes),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
