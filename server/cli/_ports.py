"""A listening socket that cannot be had, said in one line: `serve` and `sim` share it.

Binding fails before anything is served (the port is taken, the address is not this
machine's, a privileged port), so the command stops with one line naming the address
and the flag that changes it (exit 2) instead of `internal error: OSError(98, ...)`.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from server.errors import InputError


def bind_problem(exc: OSError, host: str, port: int) -> InputError:
    """The one-line error for a failed bind of `host:port`."""
    if exc.errno == errno.EADDRINUSE:
        return InputError(f"port {port} on {host} is in use; pick another with --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return InputError(f"cannot listen on {host}: not an address of this machine (--host)")
    if exc.errno == errno.EACCES:
        return InputError(f"port {port} on {host} needs privileges; pick another with --port")
    reason = exc.strerror or str(exc)
    return InputError(f"cannot listen on {host} port {port}: {reason}")


@contextlib.contextmanager
def reporting_bind_errors(host: str, port: int) -> Iterator[None]:
    """Around the start of a listener: an `OSError` becomes `bind_problem`'s one line."""
    try:
        yield
    except OSError as exc:
        raise bind_problem(exc, host, port) from exc
