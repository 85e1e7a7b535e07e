"""Agents: LLM providers, planner, executor, tools (later issue)."""
