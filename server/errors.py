"""Errors of the server package.

AutoagentError                      root of everything the project raises on purpose (events.errors)
 +-- ServerError                    the server refused or failed an operation
      +-- ConfigError               a config file, environment override or flag that cannot be
      |                             used (key, source)
      +-- InputError                a command's argument that names nothing usable
      |                             (a position out of range, an unknown id)
      +-- UnsafeBind                a non-loopback bind with no token configured
      +-- WeakToken                 a token shorter than the minimum handed to the server
      |                             (length, minimum)
      +-- DataDirInUse              a second `serve` on a data dir another server holds
      |                             (data_dir, pid, url of the running one)
      +-- BadHttpRequest            bytes on the server's port that are not a request head
      |                             it can serve (status: the HTTP status to answer with)
      +-- LeaseStoreError           the run leases table cannot be reached or written
      +-- RunElsewhere              a run another node executes (or took over meanwhile)
      +-- NodeIdInUse               a node started with the id of a node that is running
      +-- bench: BenchAborted, UnknownScenario, ServiceFailed, InvalidBenchOption,
                 GoalRejected (the bench's server refused a goal)
"""

from __future__ import annotations

from collections.abc import Iterable

from events.errors import AutoagentError


class ServerError(AutoagentError):
    """The server refused or failed an operation."""


class ConfigError(ServerError):
    """A configuration value, file or environment variable that cannot be used.

    `source` is the file path, the environment variable or the flag the value came from;
    `key` is the dotted `section.key` it was meant for (None for a whole-file problem such
    as invalid TOML). The message names both on one line, so the CLI can print it as is.
    """

    def __init__(self, problem: str, *, source: str, key: str | None = None) -> None:
        self.problem = " ".join(problem.splitlines())
        self.source = source
        self.key = key
        where = f"{_shown(source)}: {_shown(key)}" if key else _shown(source)
        super().__init__(f"{where}: {self.problem}")


def _shown(name: str) -> str:
    """A name as it can stand on one line (an environment variable may hold a newline)."""
    return name if name.isprintable() else repr(name)


class InputError(ServerError):
    """A command argument that names nothing usable: a position out of range, an unknown id."""


class UnsafeBind(ServerError):
    """Binding a non-loopback address without any token configured."""


class WeakToken(ServerError):
    """A token too short to guard the server, handed to it directly (the config loader
    refuses one from `server.tokens` or `AUTOAGENT_TOKEN` with a `ConfigError` first)."""

    def __init__(self, length: int, minimum: int) -> None:
        self.length = length
        self.minimum = minimum
        super().__init__(
            f"a token of {length} characters is too short: tokens must be at least {minimum}"
            " characters (server.tokens, AUTOAGENT_TOKEN)"
        )


class DataDirInUse(ServerError):
    """A data dir another `autoagent serve` holds; only one server may run on it."""

    def __init__(self, data_dir: object, pid: int | None, url: str | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        self.url = url
        where = f"listening on {url}" if url else "still starting"
        holder = f"pid {pid}, {where}" if pid is not None else "pid unknown"
        super().__init__(
            f"data dir {data_dir} is in use by another autoagent serve ({holder}); "
            "stop it first or pass another --data-dir"
        )


class BenchAborted(ServerError):
    """A server stopped answering the benchmark's clients (closed, or far too slow)."""


class UnknownScenario(ServerError):
    """A `--scenario` name that is not in the registry."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        super().__init__(f"unknown scenario {name!r}; choose one of {', '.join(known)}")


class ServiceFailed(ServerError):
    """A child process exited, or did not say where it listens, in time."""

    def __init__(self, name: str, problem: str, output: str) -> None:
        self.name = name
        self.output = output
        tail = " | ".join(output.strip().splitlines()[-3:])
        super().__init__(f"{name} {problem}" + (f": {tail}" if tail else ""))


class InvalidBenchOption(ServerError):
    """A `bench` flag whose value cannot be used; the message names the flag and the value."""

    def __init__(self, flag: str, expected: str, given: str) -> None:
        self.flag = flag
        self.given = given
        super().__init__(f"{flag} must be {expected}, got {given!r}")


class GoalRejected(ServerError):
    """The server answered a goal with an `error` frame."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.detail = message
        super().__init__(f"the server refused the goal ({code}): {message}")


class BadHttpRequest(ServerError):
    """Bytes on the server's port that are not an HTTP/1.1 request head it can serve.

    `status` is the answer: 400 (not HTTP, or cut short), 408 (not complete in time) or
    431 (a head over the size limit).
    """

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = " ".join(reason.splitlines())
        super().__init__(self.reason)


class LeaseStoreError(ServerError):
    """The run leases table (several nodes on PostgreSQL) cannot be reached or written.

    A node that cannot renew its leases stops executing the runs they cover before the
    leases can expire, so another node can take them over; it does not crash.
    """


class RunElsewhere(ServerError):
    """A run this process was asked to execute is another node's: it holds the run's
    lease, or took it over while this process ran it."""


class NodeIdInUse(ServerError):
    """A node started with the `server.node_id` of another running node: both would take
    each other's run leases for their own and execute the same runs."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(
            f"node id {node_id!r} is in use by another running node on this database: "
            "give each node its own server.node_id"
        )
