"""Errors of the trace export.

AutoagentError                      root (events.errors)
 +-- ServerError                    (server.errors)
      +-- TraceExportFailed         the collector did not take a batch of traces, after
                                    every retry (url, problem, retryable)
"""

from __future__ import annotations

from server.errors import ServerError


class TraceExportFailed(ServerError):
    """The OTLP collector refused a request or could not be reached, retries included."""

    def __init__(self, url: str, problem: str, *, retryable: bool) -> None:
        self.url = url
        self.problem = " ".join(problem.splitlines())
        self.retryable = retryable
        super().__init__(f"traces not exported to {url}: {self.problem}")
