"""Tools: the agent/tool interface, the registry built from the `autoagent.agents` entry
points, the workspace confinement, and the built-in agents (one module each).

Public API; every other module in this package is private.
"""

from agents.tools._base import Agent, Tool, ToolResult, check_parameters
from agents.tools._calendar import CalendarAgent
from agents.tools._clock import ClockAgent
from agents.tools._context import AgentContext, AgentSettings, DocumentsAccess, MemoryAccess
from agents.tools._document_indexer import DEFAULT_COLLECTION, IndexerOptions, IndexProgress
from agents.tools._documents import (
    DEFAULT_K,
    MAX_K,
    DocumentsAgent,
    DocumentsService,
)
from agents.tools._email import EmailAgent
from agents.tools._files import FilesAgent
from agents.tools._math import MathAgent
from agents.tools._memory import MemoryAgent
from agents.tools._quotes import QuotesAgent
from agents.tools._registry import AgentRegistry
from agents.tools._web import WebAgent
from agents.tools._workspace import Workspace
from agents.tools._writer import WriterAgent

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_K",
    "MAX_K",
    "Agent",
    "AgentContext",
    "AgentRegistry",
    "AgentSettings",
    "CalendarAgent",
    "ClockAgent",
    "DocumentsAccess",
    "DocumentsAgent",
    "DocumentsService",
    "EmailAgent",
    "FilesAgent",
    "IndexProgress",
    "IndexerOptions",
    "MathAgent",
    "MemoryAccess",
    "MemoryAgent",
    "QuotesAgent",
    "Tool",
    "ToolResult",
    "WebAgent",
    "Workspace",
    "WriterAgent",
    "check_parameters",
]
