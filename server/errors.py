"""Errors of the server package.

AutoagentError                      root of everything the project raises on purpose (events.errors)
 +-- ServerError                    the server refused or failed an operation
      +-- ConfigError               a config file, environment override or flag that cannot be
      |                             used (key, source)
      +-- InputError                a command's argument that names nothing usable
                                    (a position out of range, an unknown id)
"""

from __future__ import annotations

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
