"""The `autoagent` command line: argument parsing, dispatch, and the error boundary.

Exit codes: 0 ok, 1 a check failed (audit), 2 usage or input error. Every error we
raise on purpose becomes one line on stderr; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import trio

from events import AutoagentError, StoreCorrupted
from server._runtime import tune_process
from server.bench import add_bench_parser, bench_command
from server.cli import _admin as admin
from server.cli._client import add_server_flags, server_url
from server.cli._documents import add_documents_parser, documents_command
from server.cli._forget import add_forget_parser, forget_command
from server.cli._inspect import runs_list, runs_show, sessions_list, sessions_show
from server.cli._migrate import add_migrate_parser, migrate_command
from server.cli._replay import replay
from server.cli._run import approve_step, cancel_run, resume_run, retry_run, run_goal
from server.cli._serve import serve
from server.cli._sim import add_sim_parser, run_sim
from server.cli._trace import add_trace_parser, runs_trace
from server.cli._workspace import anchored_workspace, ensure_workspace
from server.config import Config, load_config, resolve_config_path
from server.errors import InputError

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2
RUN_STATUSES = ("requested", "running", "completed", "failed", "cancelled")


class _Parser(argparse.ArgumentParser):
    """A parser that refuses unknown arguments itself, with its own usage.

    argparse lets a subcommand's parser hand arguments it does not know back to the
    top level, which then prints the top-level usage; `runs list --bogus` should print
    the usage of `runs list`.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _common(*, top_level: bool = False) -> argparse.ArgumentParser:
    """Options every command takes, before the subcommand or after it.

    After the subcommand their default is "not given" (SUPPRESS), so a value given
    before it is kept; given in both places, the later one wins.
    """
    common = _Parser(add_help=False)
    default = None if top_level else argparse.SUPPRESS
    common.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="config file (env: AUTOAGENT_CONFIG; default: built-in defaults)",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="data directory (env: AUTOAGENT_DATA_DIR; default: store.data_dir, ./data)",
    )
    return common


def _version() -> str:
    try:
        return importlib.metadata.version("autoagent")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    # Typed as the base class: subcommand parsers are made with `type(parser)` (`_Parser`)
    # and are handed to helpers that take any ArgumentParser.
    parser: argparse.ArgumentParser = _Parser(
        prog="autoagent",
        description="Event-sourced AI agent server.",
        parents=[_common(top_level=True)],
    )
    parser.add_argument(
        "--version", action="version", version=f"autoagent {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd = commands.add_parser("serve", parents=[common], help="run the server")
    serve_cmd.add_argument("--host", help="address to listen on (server.host, 127.0.0.1)")
    serve_cmd.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (server.port, 8765)"
    )
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run one goal: in the running server (steps shown as they happen), else here",
    )
    run.add_argument("goal", help="what to do, in plain words")
    run.add_argument("--session", metavar="ID", help="continue this session (default: a new one)")
    _json_flag(run, "the outcome with the run's events")
    add_server_flags(run, local=True)
    add_sim_parser(commands, common)
    add_bench_parser(commands, common)
    add_documents_parser(commands, common)
    _add_events(commands, common)
    _add_inspection(commands, common)
    replay = commands.add_parser(
        "replay", parents=[common], help="rebuild projections (--verify: compare with live)"
    )
    replay.add_argument(
        "--projection", metavar="NAME", help="only this projection (default: every one)"
    )
    replay.add_argument(
        "--verify",
        action="store_true",
        help="rebuild in memory and compare with the live state; exit 1 on a difference",
    )
    _json_flag(replay, "the report")
    audit = commands.add_parser("audit", parents=[common], help="verify the hash chain")
    _json_flag(audit, "the report")
    stats = commands.add_parser("stats", parents=[common], help="size and contents of the store")
    _json_flag(stats, "the statistics, the configuration included")
    add_forget_parser(commands, common)
    add_migrate_parser(commands)
    _add_approve(commands, common)
    return parser


def _add_events(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    events = commands.add_parser("events", help="read the event log")
    sub = events.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    tail = sub.add_parser("tail", parents=[common], help="recent events; --follow for live")
    tail.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C"
    )
    tail.add_argument("--stream", help="only events of this stream (e.g. run-<id>)")
    tail.add_argument("--type", help="only events of this type (e.g. StepCompleted)")
    tail.add_argument(
        "--after", type=int, metavar="N", help="start after position N (default: near the end)"
    )
    tail.add_argument(
        "--lines",
        "-n",
        type=int,
        default=None,
        metavar="N",
        help=f"how many events: the last N (default {admin.TAIL_DEFAULT}); "
        "with --after, the first N after it (default all)",
    )
    _json_flag(tail, "each event")
    show = sub.add_parser("show", parents=[common], help="one event in full")
    show.add_argument("position", type=int, help="its position in the log (from 1)")
    _json_flag(show, "the event")
    export = sub.add_parser("export", parents=[common], help="all events as JSON lines")
    export.add_argument(
        "--after", type=int, default=0, metavar="N", help="start after position N (default 0)"
    )


def _add_inspection(commands: SubParsers, common: argparse.ArgumentParser) -> None:
    sessions = commands.add_parser("sessions", help="sessions as projected from the log")
    sub = sessions.add_subparsers(dest="sessions_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", parents=[common], help="every session")
    _json_flag(listing, "the sessions")
    show = sub.add_parser("show", parents=[common], help="one session and its recent messages")
    show.add_argument("id", help="the session's id")
    _json_flag(show, "the session")
    runs = commands.add_parser("runs", help="runs as projected from the log")
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", parents=[common], help="every run")
    listing.add_argument("--status", choices=RUN_STATUSES, help="only runs in this status")
    _json_flag(listing, "the runs")
    show = sub.add_parser(
        "show", parents=[common], help="one run: each step's tool, parameters, result, timing"
    )
    show.add_argument("id", help="the run's id")
    _json_flag(show, "the run with its timeline")
    show.add_argument("--gantt", metavar="OUT.svg", help="also draw the timeline as SVG")
    add_trace_parser(sub, common)
    resume = sub.add_parser("resume", parents=[common], help="continue an unfinished run")
    resume.add_argument("id", help="the run's id")
    _json_flag(resume, "the outcome with the run's events")
    add_server_flags(resume, local=True)
    retry = sub.add_parser(
        "retry",
        parents=[common],
        help="run a failed or cancelled run again as a new run, reusing its idempotent results",
    )
    retry.add_argument("id", help="the failed or cancelled run's id")
    _json_flag(retry, "the new run's outcome with its events")
    add_server_flags(retry, local=True)
    cancel = sub.add_parser(
        "cancel", parents=[common], help="stop a run the running server executes or holds"
    )
    cancel.add_argument("id", help="the run's id")
    _json_flag(cancel, "the outcome")
    add_server_flags(cancel)


def _add_approve(commands: SubParsers, common: argparse.ArgumentParser) -> None:
    approve = commands.add_parser(
        "approve", parents=[common], help="decide on a step that waits for a human's approval"
    )
    approve.add_argument("run_id", metavar="RUN_ID", help="the run whose step waits")
    approve.add_argument("step_id", metavar="STEP_ID", help="the step that waits (e.g. s2)")
    approve.add_argument(
        "decision", choices=("approve", "deny"), help="approve: the step runs; deny: it is skipped"
    )
    approve.add_argument("--note", metavar="TEXT", help="a note recorded with the decision")
    _json_flag(approve, "the decision")
    add_server_flags(approve)


def _with_listen_flags(config: Config, args: argparse.Namespace) -> Config:
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.port is not None and not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a port number (0-65535)")
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **changes))


def _config(args: argparse.Namespace) -> Config:
    config = load_config(resolve_config_path(args.config), data_dir=args.data_dir)
    return anchored_workspace(config)


def _uses_workspace(config: Config, args: argparse.Namespace) -> bool:
    """Whether the command runs tools that read or write the workspace here."""
    runs_here = (
        args.command == "run"
        or (args.command == "runs" and args.runs_command in ("resume", "retry"))
        or (args.command == "documents" and args.documents_command == "index")
    )
    if runs_here:  # `serve` creates it itself, once its checks have passed
        return server_url(config, args) is None  # else the server's tools do the work
    return False


def _dispatch(args: argparse.Namespace, out: TextIO, own_process: bool = False) -> int:
    """Run the command. `own_process`: this process is the `autoagent` command (not a
    caller of `main`, such as a test), so its garbage collector and its threads' switch
    interval are set for it (`server._runtime`) and `serve` freezes what is alive once
    warm."""
    if args.command == "migrate":  # its logs are named by its flags, not by a config
        return migrate_command(args, out)
    config = _config(args)
    if own_process:
        tune_process(config.performance)
    if _uses_workspace(config, args):
        for root in ensure_workspace(config):
            print(f"autoagent: created the workspace folder {root}", file=sys.stderr)
    if args.command == "serve":
        serving = functools.partial(serve, own_process=own_process)
        return trio.run(serving, _with_listen_flags(config, args), out)
    if args.command == "replay":
        return replay(config, args, out)
    if args.command == "sessions":
        command = sessions_show if args.sessions_command == "show" else sessions_list
        return command(config, args, out)
    if args.command == "documents":
        return documents_command(config, args, out)
    if args.command == "forget":
        return forget_command(config, args, out)
    if args.command == "bench":
        return bench_command(args, config, out)
    if args.command == "sim":
        return run_sim(args, config, out)
    if args.command == "run":
        return run_goal(config, args, out)
    if args.command == "runs":
        handlers = {
            "show": runs_show,
            "list": runs_list,
            "trace": runs_trace,
            "resume": resume_run,
            "retry": retry_run,
            "cancel": cancel_run,
        }
        return handlers[args.runs_command](config, args, out)
    if args.command == "approve":
        return approve_step(config, args, out)
    log = admin.open_readonly(config)
    try:
        if args.command == "audit":
            return admin.audit(log, args, out)
        if args.command == "stats":
            return admin.stats(log, config, args, out)
        handler = {
            "tail": admin.events_tail,
            "show": admin.events_show,
            "export": admin.events_export,
        }
        return handler[args.events_command](admin.opened(config, log), args, out)
    finally:
        log.close()


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, *, own_process: bool = False
) -> int:
    """Run one command; returns the exit code. `own_process`: see `_dispatch`."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args, out or sys.stdout, own_process)
    except (KeyboardInterrupt, BrokenPipeError):
        return EXIT_OK
    except BaseExceptionGroup as group:  # from inside a Trio nursery
        _, rest = group.split((KeyboardInterrupt, BrokenPipeError))
        if rest is None:
            return EXIT_OK
        if not isinstance(rest, Exception):
            raise
        return _report_error(_unwrap(rest))
    except Exception as exc:
        return _report_error(_unwrap(exc))


def _unwrap(exc: BaseException) -> BaseException:
    """The error a user should see: our own one inside Trio's exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        ours = [e for e in exc.exceptions if isinstance(e, AutoagentError | BaseExceptionGroup)]
        exc = (ours or list(exc.exceptions))[0]
    return exc


def _report_error(exc: BaseException) -> int:
    if isinstance(exc, StoreCorrupted):
        print(f"autoagent: error: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if isinstance(exc, AutoagentError):
        print(f"autoagent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.environ.get("AUTOAGENT_DEBUG"):
        raise exc
    print(
        f"autoagent: internal error: {exc!r} (set AUTOAGENT_DEBUG=1 for a traceback)",
        file=sys.stderr,
    )
    return EXIT_CHECK_FAILED


def console_main() -> None:
    """The `autoagent` command (and `python -m server`): this process is the command."""
    sys.exit(main(own_process=True))
