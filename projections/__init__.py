"""Projections: state rebuilt incrementally from the event log (later issue)."""
