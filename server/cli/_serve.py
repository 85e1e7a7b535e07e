"""`autoagent serve`: the application from `server.app`, served until a signal.

`open_application` holds the store open with its writer running, brings every
projection up to the log head in the background (a progress bar on a terminal; a line
here once caught up) and follows the log live; this command puts the WebSocket server
on top at once, resumes runs left unfinished by a crash, and waits for SIGINT/SIGTERM.
On a signal the serving is cancelled first (connections and runs; a run finishing a step
still queues its transition), then the application closes in order: projections flush
their snapshots, queued appends commit, unfinished runs stay in the log for the next
start, and the process exits 0. A signal while the application is still opening
cancels everything at once.

One server per data dir: the first takes the data dir's lock (`server._datadir`) before
opening anything and records its URL there once listening; a second is refused at
start with one line naming the running one. Then the workspace roots are created when
missing, and printed; a port already in use is one line too (`server.cli._ports`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

import trio

from agents.runs import load_run
from server._datadir import DataDirLock, client_url, open_data_dir_lock
from server._runtime import collector_state, freeze_survivors
from server.app import Application, agent_server, open_application, server_tokens
from server.cli._ports import reporting_bind_errors
from server.cli._workspace import ensure_workspace
from server.config import Config
from server.errors import LeaseStoreError
from server.leases import RunLeases
from server.ws import check_bind


class _Stopper:
    """What a signal cancels: everything while the application opens; once it is open,
    the serving alone (connections and runs), so that runs end while the store, its
    writer and the projections still run, and the application then closes in order.
    Cancelling everything at once let the store's writer stop under a run that was
    still finishing a step: its last transition failed as "the event store is closed"
    (logged as an internal error) instead of being queued, as the docstring promises.
    """

    def __init__(self, everything: trio.CancelScope) -> None:
        self.everything = everything
        self.serving: trio.CancelScope | None = None

    def stop(self) -> None:
        (self.serving or self.everything).cancel()


async def _stop_on_signal(signals: AsyncIterator[int], stopper: _Stopper, out: TextIO) -> None:
    async for signum in signals:
        out.write(f"autoagent: {signal.Signals(signum).name} received, stopping\n")
        out.flush()
        stopper.stop()
        return


async def serve(config: Config, out: TextIO = sys.stdout, *, own_process: bool = False) -> int:
    """Serve until a signal. `own_process`: this process is the server (the CLI), so
    once warm it freezes what is alive out of the collector's scans (`server._runtime`);
    a test running `serve` inside its own process leaves the collector alone."""
    tokens = server_tokens(config)
    check_bind(config.server.host, tokens)
    async with open_data_dir_lock(config.store.data_path) as lock:
        created = await trio.to_thread.run_sync(ensure_workspace, config)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                stopper = _Stopper(nursery.cancel_scope)
                nursery.start_soon(_stop_on_signal, signals, stopper, out)
                async with open_application(config) as app:
                    if own_process and config.performance.gc_freeze:
                        app.warmup.start("collector")
                        nursery.start_soon(_freeze_when_warm, app, out)
                    with trio.CancelScope() as stopper.serving:
                        await _serve_application(app, tokens, lock, out, created)
                # The application has closed in order (runs, then projections, then the
                # store); what is left here (the signal watcher, a freeze still waiting
                # for warm) has nothing more to do.
                nursery.cancel_scope.cancel()
    out.write("autoagent: stopped cleanly\n")
    out.flush()
    return 0


async def _freeze_when_warm(app: Application, out: TextIO) -> None:
    """Once the model is loaded, the projections caught up and the agents built: one
    full collection, and what is alive then frozen out of later ones (`server._runtime`
    says why; what the agents hold, and the modules they import, are among it)."""
    await app.warmup.wait("embedder")
    await app.warmup.wait("projections")
    await app.warmup.wait("agents")
    seconds = freeze_survivors()
    app.warmup.finish("collector")
    frozen = collector_state().frozen
    out.write(
        f"autoagent: warm; {frozen:,} objects frozen out of the garbage collector's scans "
        f"in {seconds * 1000:.0f} ms (performance.gc_freeze)\n"
    )
    out.flush()


async def _serve_application(
    app: Application,
    tokens: tuple[str, ...],
    lock: DataDirLock,
    out: TextIO,
    created: list[Path],
) -> None:
    config, store, runner = app.config, app.store, app.runner
    server = agent_server(app)
    async with trio.open_nursery() as nursery:
        with reporting_bind_errors(config.server.host, config.server.port):
            port = await nursery.start(server.serve, config.server.host, config.server.port)
        lock.record_url(client_url(config.server.host, port))
        out.write(
            f"autoagent: event store open at {config.store.data_path.resolve()} (head position "
            f"{store.head_position}, projections at {runner.position}); Ctrl-C to stop\n"
            f"autoagent: listening on ws://{config.server.host}:{port} "
            f"(HTTP /healthz, /metrics; auth {'on' if tokens else 'off'})\n"
            f"autoagent: workspace {_roots(config, created)} (agents.workspace_roots)\n"
        )
        if server.keeper.shared:
            out.write(_node_line(config, server.keeper.leases.node_id))
        out.flush()
        nursery.start_soon(_report_caught_up, app, out)
        unfinished = await app.orchestrator.unfinished_runs()
        if server.keeper.shared:  # several nodes: not the runs another node executes
            unfinished = await _not_held_elsewhere(server.keeper.leases, unfinished, out)
        for run_id in unfinished:
            state_of_run = await load_run(store, run_id)
            server.start_run(run_id, state_of_run.session_id, state_of_run.principal, resume=True)
        if unfinished:
            out.write(f"autoagent: resumed {len(unfinished)} unfinished run(s)\n")
            out.flush()


async def _not_held_elsewhere(leases: RunLeases, runs: list[str], out: TextIO) -> list[str]:
    """The runs no other node holds a live lease on (the rest are theirs to finish); none
    when the leases cannot be read: the takeover rounds find them later."""
    try:
        holders = [await trio.to_thread.run_sync(leases.holder, r) for r in runs]
    except LeaseStoreError as exc:
        out.write(f"autoagent: unfinished runs left to the takeover rounds: {exc}\n")
        return []
    return [r for r, holder in zip(runs, holders, strict=True) if holder in (None, leases.node_id)]


def _node_line(config: Config, node: str) -> str:
    """This node's id among the nodes of one database, and a hint when it is derived."""
    ttl = config.resume.lease_ttl_s
    line = f"autoagent: node {node}, runs leased for {ttl:g} s (resume.lease_ttl_s)"
    if not config.server.node_id:
        line += "; server.node_id unset: set it where the host name changes across restarts"
    return line + "\n"


def _roots(config: Config, created: list[Path]) -> str:
    """The workspace roots, each marked when this start created it."""
    shown = [
        f"{root}{' (created)' if root in created else ''}" for root in config.agents.workspace_paths
    ]
    return ", ".join(shown) or "none"


async def _report_caught_up(app: Application, out: TextIO) -> None:
    """One line once the projections, caught up in the background, reach the log's head."""
    await app.warmup.wait("projections")
    out.write(f"autoagent: projections caught up at position {app.runner.position}\n")
    out.flush()
