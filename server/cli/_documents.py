"""`autoagent documents index|search|list`: the documents agent from the command line.

Like `autoagent run`, `index` goes through the running server when one holds the data
dir or `--server` names one (`server.cli._client`): it sends `index_documents`, the
server's documents agent indexes (its index, embedder and workspace, the ones its runs
use) and reports progress, and the report printed is the one it returns.

Otherwise, and for `search` and `list`, the commands work on the data dir in this
process: the event store is opened for writing, the `documents` projection is restored
from its saved snapshot, caught up with the log and followed live while the command
runs, and saved again (snapshot with checkpoint) on exit, so the next start only reads
the tail.

`index` shows its progress on stderr: a bar on a terminal, a plain line every few
seconds otherwise, nothing with --json. A PATH that exists relative to the working
directory is taken from there (made absolute before it is sent to a server);
otherwise it is relative to the first workspace root, as in a plan. It must lie inside
a workspace root either way (the server's, through a server).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from agents.errors import NothingToIndex
from agents.tools import (
    DEFAULT_COLLECTION,
    DEFAULT_K,
    MAX_K,
    DocumentsAccess,
    DocumentsService,
    IndexProgress,
    Workspace,
)
from server._progress import ProgressLine
from server._render import dumps, table
from server.app import (
    indexer_options,
    open_configured_embedder,
    open_configured_store,
    open_live_indexes,
)
from server.cli._client import add_server_flags, open_server_client, server_url, token_of
from server.config import Config
from server.errors import InputError

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

QUOTE_CHARS = 300


def add_documents_parser(commands: SubParsers, common: argparse.ArgumentParser) -> None:
    documents = commands.add_parser("documents", help="index and search documents")
    sub = documents.add_subparsers(dest="documents_command", required=True, metavar="SUBCOMMAND")
    index = sub.add_parser(
        "index",
        parents=[common],
        help="index a folder or file of the workspace: in the running server, else here",
    )
    index.add_argument(
        "path", help="inside a workspace root (agents.workspace_roots; the server's, through one)"
    )
    index.add_argument(
        "--collection",
        default=DEFAULT_COLLECTION,
        metavar="C",
        help=f"collection to index into (default {DEFAULT_COLLECTION!r})",
    )
    index.add_argument("--json", action="store_true", help="print the report as JSON")
    add_server_flags(index, local=True)
    search = sub.add_parser("search", parents=[common], help="passages closest to a query")
    search.add_argument("query", help="what to look for, in plain words")
    search.add_argument(
        "--k", type=int, default=DEFAULT_K, metavar="N", help=f"passages (1-{MAX_K})"
    )
    search.add_argument("--collection", metavar="C", help="one collection (default: all)")
    search.add_argument("--json", action="store_true", help="print the passages as JSON")
    listing = sub.add_parser("list", parents=[common], help="the indexed documents")
    listing.add_argument("--collection", metavar="C", help="one collection (default: all)")
    listing.add_argument("--json", action="store_true", help="print the documents as JSON")


def documents_command(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Run one `documents` subcommand; errors propagate to the CLI's error boundary."""
    if args.documents_command == "search" and not 1 <= args.k <= MAX_K:
        raise InputError(f"--k {args.k} is not between 1 and {MAX_K}")
    url = server_url(config, args) if args.documents_command == "index" else None
    if url is not None:
        result: dict[str, Any] = trio.run(_index_through_server, url, args)
    else:
        result = trio.run(_run, config, args)
    if args.json:
        out.write(dumps(result, indent=2) + "\n")
    else:
        _WRITERS[args.documents_command](result, out)
    return 0


async def _run(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    async with (
        open_configured_store(config) as store,
        open_live_indexes(config, store, memory=False) as live,
        open_configured_embedder(config) as embedder,
    ):
        access = DocumentsAccess(embedder, live.documents, live.wait_for, indexer_options(config))
        workspace = Workspace.of(config.agents.workspace_paths)
        service = DocumentsService(access, store, workspace)
        command = args.documents_command
        if command == "index":
            line = None if args.json else ProgressLine("indexing files", sys.stderr)
            path = _cli_path(args.path)
            try:
                return await service.index(path, args.collection, _shown(line))
            except NothingToIndex as exc:
                raise InputError(str(exc)) from exc
            finally:
                if line is not None:
                    line.close()
        if command == "search":
            return await service.search(args.query, args.k, args.collection)
        return await service.list(args.collection)


async def _index_through_server(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """`index_documents` in the server at `url`: its progress drawn here, its report."""
    line = None if args.json else ProgressLine("indexing files", sys.stderr)
    fields = {"path": _cli_path(args.path), "collection": args.collection}
    try:
        async with open_server_client(url, token_of(args)) as client:
            reply = await client.request_with_progress(
                "index_documents", "documents_indexed", "index_progress", _drawn(line), **fields
            )
    finally:
        if line is not None:
            line.close()
    report = reply.get("report")
    if not isinstance(report, dict):
        raise InputError(f"the server at {url} answered index_documents without a report")
    return report


def _drawn(line: ProgressLine | None) -> Callable[[dict[str, Any]], None]:
    """An `index_progress` frame drawn on `line` as the in-process progress is; frames
    sent before the files are counted (`files_total` 0) draw nothing."""
    shown = _shown(line)

    def draw(frame: dict[str, Any]) -> None:
        counts = [frame.get(k) for k in ("files_done", "files_total", "chunks_embedded")]
        done, total, chunks = [c if type(c) is int else 0 for c in counts]
        if shown is not None and total:
            shown(IndexProgress(done, total, chunks))

    return draw


def _cli_path(given: str) -> str:
    """A path that exists from the working directory as an absolute one; else as given."""
    path = Path(given).expanduser()
    return str(path.absolute()) if not path.is_absolute() and path.exists() else given


def _shown(line: ProgressLine | None) -> Callable[[IndexProgress], None] | None:
    """The indexer's progress callback drawing on `line` (a bar, or plain lines)."""
    if line is None:
        return None
    return lambda p: line.update(
        p.files_done, p.files_total, f"({p.chunks_embedded} chunks embedded)"
    )


# --- plain output -----------------------------------------------------------------------


def _write_index(result: dict[str, Any], out: TextIO) -> None:
    counts = result["counts"]
    requests = counts["embedding_requests"]
    out.write(
        f"collection {result['collection']!r}, {result['target']}: {counts['indexed']} indexed, "
        f"{counts['unchanged']} unchanged, {counts['removed']} removed, "
        f"{counts['skipped']} skipped, {counts['unreadable']} unreadable "
        f"({counts['chunks']} chunks, {requests} embedding request"
        f"{'' if requests == 1 else 's'}, {counts['seconds']:.2f} s)\n"
    )
    for item in result["skipped"]:
        out.write(f"skipped {item['path']}: {item['reason']}\n")
    for item in result["unreadable"]:
        out.write(f"unreadable {item['path']}: {item['reason']}\n")
    if result["truncated"]:
        out.write("(lists truncated; --json has the first entries of each)\n")


def _write_search(result: dict[str, Any], out: TextIO) -> None:
    passages = result["passages"]
    if not passages:
        out.write((result.get("message") or f"no passages found for {result['query']!r}") + "\n")
    for rank, passage in enumerate(passages, 1):
        where = f"{passage['collection']}:{passage['path']} @{passage['offset']}"
        out.write(f"{rank}. {where} (score {passage['score']:.3f})\n")
        quote = " ".join(passage["quote"].split())
        quote = quote if len(quote) <= QUOTE_CHARS else quote[: QUOTE_CHARS - 3] + "..."
        out.write(f"   > {quote}\n")


def _write_list(result: dict[str, Any], out: TextIO) -> None:
    rows = [(d["collection"], d["path"], d["chunks"], d["bytes"]) for d in result["documents"]]
    out.write(table(["collection", "path", "chunks", "bytes"], rows) + "\n")
    out.write(f"{result['count']} documents in {len(result['collections'])} collection(s)\n")


_WRITERS: dict[str, Callable[[dict[str, Any], TextIO], None]] = {
    "index": _write_index,
    "search": _write_search,
    "list": _write_list,
}
