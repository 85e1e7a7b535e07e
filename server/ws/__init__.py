"""The WebSocket side: protocol frames, one connection, the HTTP front (health, metrics),
limits, and the server that accepts connections.

Public API; every other module in this package is private.
"""

from server.ws._http_front import (
    RequestHead,
    answer_http,
    read_head,
)
from server.ws._limits import (
    ServerLimits,
)
from server.ws._server import (
    AgentServer,
    check_bind,
)

__all__ = [
    "AgentServer",
    "RequestHead",
    "ServerLimits",
    "answer_http",
    "check_bind",
    "read_head",
]
