"""The tools agents offer: the interface, and the built-in agents."""

from .base import Agent, AgentContext, Tool, ToolResult, check_parameters

__all__ = ["Agent", "AgentContext", "Tool", "ToolResult", "check_parameters"]
