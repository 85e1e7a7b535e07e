"""Errors of the server package.

AutoagentError                      root of everything the project raises on purpose (events.errors)
 +-- ServerError                    the server refused or failed an operation
      +-- ConfigError               a config file, environment override or flag that cannot be
      |                             used (key, source)
      +-- InputError                a command's argument that names nothing usable
      |                             (a position out of range, an unknown id)
      +-- UnsafeBind                a non-loopback bind with no token configured
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
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {self.problem}")


class InputError(ServerError):
    """A command argument that names nothing usable: a position out of range, an unknown id."""


class UnsafeBind(ServerError):
    """Binding a non-loopback address without any token configured."""


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
