"""One LLM call from the caller's side: limiter, attempts with backoff, and its event.

The runner owns retries (the SDK's are off), so every retry is counted in the call's
`LLMCallCompleted`. A call that opens a stream holds its limiter permit until the
stream ends; the `CallLease` it gets settles the permit and records the call then.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import trio

from agents.errors import LLMError, RateLimited, RetriesExhausted
from agents.llm._provider import Usage
from agents.llm._rate_limiter import Clock, Permit, RateLimiter
from agents.llm._recorder import CallRecorder
from agents.llm._retry import RetryPolicy
from events import LLMCallCompleted

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What the event will say about a call, and the tokens to reserve for it."""

    purpose: str
    run_id: str | None
    model: str
    estimated_tokens: int


@dataclass(frozen=True, slots=True)
class Completed(Generic[T]):
    value: T
    usage: Usage
    latency_s: float
    retries: int


class CallLease:
    """An admitted call in progress: finish or fail it exactly once."""

    def __init__(
        self,
        runner: CallRunner,
        request: CallRequest,
        permit: Permit | None,
        started: float,
        retries: int,
    ) -> None:
        self._runner = runner
        self.request = request
        self._permit = permit
        self.started = started
        self.retries = retries

    @property
    def latency_s(self) -> float:
        return self._runner.clock() - self.started

    async def finish(self, usage: Usage) -> None:
        self._runner.settle(self._permit, usage.total_tokens, ok=True)
        await self._runner.record(self.request, usage, self.latency_s, self.retries, "ok")

    async def fail(self, error: LLMError) -> None:
        self._runner.settle(self._permit, None, ok=False)
        outcome = type(error).__name__
        await self._runner.record(self.request, Usage(), self.latency_s, self.retries, outcome)

    def abandon(self) -> None:
        """Cancelled: free the permit, record nothing (the outcome is unknown)."""
        self._runner.settle(self._permit, None, ok=False)


class CallRunner:
    """Attempts with backoff under a limiter (None: unlimited), each call recorded."""

    def __init__(
        self,
        recorder: CallRecorder,
        policy: RetryPolicy,
        limiter: RateLimiter | None = None,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.recorder = recorder
        self.policy = policy
        self.limiter = limiter
        self._rng = rng or random.Random()
        self.clock = clock or trio.current_time

    async def call(
        self, request: CallRequest, attempt: Callable[[], Awaitable[tuple[T, Usage]]]
    ) -> Completed[T]:
        """Run `attempt` until it succeeds or the policy gives up; record the call."""
        (value, usage), lease = await self.open(request, attempt)
        await lease.finish(usage)
        return Completed(value, usage, lease.latency_s, lease.retries)

    async def open(
        self, request: CallRequest, attempt: Callable[[], Awaitable[T]]
    ) -> tuple[T, CallLease]:
        """Like `call`, but the caller finishes the returned lease (streams do, at their end)."""
        started, retries = self.clock(), 0
        while True:
            permit = await self._acquire(request.estimated_tokens)
            try:
                return await attempt(), CallLease(self, request, permit, started, retries)
            except LLMError as error:
                self.settle(permit, None, ok=False)
                await self._after_failure(request, error, started, retries)
                retries += 1
            except BaseException:
                self.settle(permit, None, ok=False)
                raise

    async def _after_failure(
        self, request: CallRequest, error: LLMError, started: float, retries: int
    ) -> None:
        """Sleep before the next attempt, or record the call and raise the final error."""
        if isinstance(error, RateLimited) and self.limiter is not None:
            self.limiter.rate_limited(error.retry_after)
        delay = self.policy.delay(error, retries, self._rng)
        elapsed = self.clock() - started
        final = self._final_error(error, retries, elapsed, delay)
        if final is not None:
            await self.record(request, Usage(), elapsed, retries, type(final).__name__)
            raise final
        await trio.sleep(delay)

    def _final_error(
        self, error: LLMError, retries: int, elapsed: float, delay: float
    ) -> LLMError | None:
        """None to go on; else what to raise: the error itself, or RetriesExhausted.

        RetriesExhausted only when there were retries; a first failure that may not be
        retried is raised as itself, so the caller sees the plain cause.
        """
        if not error.retryable:
            return error
        if not self.policy.should_retry(error, retries):
            return RetriesExhausted(retries + 1, error) if retries else error
        if not self.policy.within_deadline(elapsed, delay):
            deadline = f"deadline of {self.policy.deadline_s:g} s"
            return RetriesExhausted(retries + 1, error, deadline) if retries else error
        return None

    async def _acquire(self, tokens: int) -> Permit | None:
        if self.limiter is None:
            await trio.lowlevel.checkpoint()
            return None
        return await self.limiter.acquire(tokens)

    def settle(self, permit: Permit | None, used_tokens: int | None, *, ok: bool) -> None:
        if permit is not None and self.limiter is not None:
            self.limiter.release(permit, used_tokens=used_tokens, ok=ok)

    async def record(
        self, request: CallRequest, usage: Usage, latency_s: float, retries: int, outcome: str
    ) -> None:
        event = LLMCallCompleted(
            run_id=request.run_id,
            purpose=request.purpose,
            model=request.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_s=round(latency_s, 6),
            retries=retries,
            outcome=outcome,
        )
        await self.recorder.record(event)


class settling:
    """Settle a stream's lease when its generator ends: finished, failed or abandoned.

    The stream sets `usage` when the endpoint reports it; a consumer that stops early
    (GeneratorExit) still gets the call recorded, a cancelled one does not.
    """

    def __init__(self, lease: CallLease, usage: Usage) -> None:
        self.lease = lease
        self.usage = usage

    async def __aenter__(self) -> settling:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, GeneratorExit):
            await self.lease.finish(self.usage)
        elif isinstance(exc, LLMError):
            await self.lease.fail(exc)
        else:
            self.lease.abandon()
