"""When to try an LLM call again, and how long to wait first.

Jittered exponential backoff ("equal jitter": half the ceiling fixed, half random) so a
crowd of failed callers does not return in lock-step, while each still waits a useful
minimum. A 429 that names its wait is honoured: never less than Retry-After. Bounded by
a number of retries and by a deadline over the whole call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agents.errors import LLMError, RateLimited


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_retries` attempts after the first, within `deadline_s` of the call's start."""

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    deadline_s: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {self.max_retries}")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")

    def should_retry(self, error: LLMError, retries_so_far: int) -> bool:
        return error.retryable and retries_so_far < self.max_retries

    def delay(self, error: LLMError, retries_so_far: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retries_so_far + 1`."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return error.retry_after + rng.uniform(0, min(1.0, error.retry_after * 0.1))
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0**retries_so_far)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def within_deadline(self, elapsed: float, delay: float) -> bool:
        return self.deadline_s is None or elapsed + delay <= self.deadline_s
