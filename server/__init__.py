"""The autoagent server: configuration, the composition root, the WebSocket API and CLI.

`server.app` builds the running application from a `Config`; `server.ws` serves it over
WebSocket and HTTP; `server.cli` is the `autoagent` command; `server.bench` is
`autoagent bench`. Public API; every other module in this package is private.
"""

from server.app import Application, agent_server, open_application, open_orchestrator
from server.config import Config, load_config
from server.errors import ConfigError, InputError, ServerError

__all__ = [
    "Application",
    "Config",
    "ConfigError",
    "InputError",
    "ServerError",
    "agent_server",
    "load_config",
    "open_application",
    "open_orchestrator",
]
