"""Who may talk to the server: token strength and comparison, bearer headers, and the
browser origins a WebSocket handshake may come from.

Shared by the config loader (which checks `server.tokens` and `server.allowed_origins`
when they are read) and the WebSocket server (which applies them to each request).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from events import LOCAL_PRINCIPAL

# Shorter tokens are refused at start-up: a token is the only thing between the
# network and the agents, and 32 characters leave guessing out of reach.
MIN_TOKEN_CHARS = 32

_DEFAULT_PORTS = {"http": 80, "https": 443}
# host: a name or IPv4 address (no userinfo, path, query or whitespace), or [IPv6].
_HOST = r"(?P<host>[A-Za-z0-9._~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
_ORIGIN_RE = re.compile(rf"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://{_HOST}")
_HOST_RE = re.compile(_HOST)

Origin = tuple[str, str, int]  # scheme, host (lower case), port
Role = Literal["admin", "user"]
ADMIN_NAME = "admin"  # the principal of the tokens in `server.tokens`


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection acts for: a name (recorded in events) and a role.

    `admin` may follow every stream and act on every run; `user` only on the sessions
    and runs it created and its own memory. The documents collections are shared: any
    principal may index into them (`index_documents`), as any principal's runs may
    (`documents.index`); the workspace roots confine what is read, whoever asks.
    """

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def owns(self, owner: str | None) -> bool:
        """Whether something belonging to `owner` is this principal's to see or act on."""
        return self.is_admin or (owner is not None and owner == self.name)


# The one principal of a server without tokens (loopback only): the machine's operator.
LOCAL = Principal(LOCAL_PRINCIPAL, "admin")
ADMIN = Principal(ADMIN_NAME, "admin")


def token_problem(token: str) -> str | None:
    """Why a configured token may not be used, or None when it may."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"a token must be at least {MIN_TOKEN_CHARS} characters, got {len(token)}"
    return None


def match_token(tokens: Iterable[str], given: str) -> str | None:
    """The configured token equal to `given`, or None.

    Every configured token is compared, each in constant time, so neither the timing
    nor the number of comparisons says how close a guess came or which token matched.
    """
    given_bytes = given.encode("utf-8", "surrogatepass")
    found: str | None = None
    for token in tokens:
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), given_bytes):
            found = token
    return found


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an `Authorization: Bearer <token>` header; "" when there is none."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def parse_origin(text: str) -> Origin | None:
    """`scheme://host[:port]` as (scheme, host, port) in lower case; None for anything
    else (`null`, a path, userinfo, an unknown scheme without a port)."""
    match = _ORIGIN_RE.fullmatch(text.strip())
    if match is None:
        return None
    scheme = match["scheme"].lower()
    port = _port(match["port"], _DEFAULT_PORTS.get(scheme))
    return None if port is None else (scheme, match["host"].lower(), port)


def origin_allowed(
    origin: str, host_header: str, allowed: Iterable[str], *, any_host: bool
) -> bool:
    """Whether a browser page from `origin` may open a WebSocket here.

    Allowed: an origin listed in `allowed` (same scheme, host and port), or the server's
    own origin, http(s)://<Host header> (a Host without a port means the scheme's default
    port). `any_host` False counts the own origin only when the Host names a loopback
    address, so a page whose DNS name was rebound to 127.0.0.1 is not "own" on an
    unauthenticated, loopback-only server.
    """
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    if parsed in {parse_origin(item) for item in allowed}:
        return True
    scheme, host, port = parsed
    own = _HOST_RE.fullmatch(host_header.strip())
    if scheme not in _DEFAULT_PORTS or own is None or own["host"].lower() != host:
        return False
    if not any_host and not _is_loopback(host):
        return False
    return _port(own["port"], _DEFAULT_PORTS[scheme]) == port


def _port(text: str | None, default: int | None) -> int | None:
    if text is None:
        return default
    port = int(text)
    return port if 0 < port <= 65535 else None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
