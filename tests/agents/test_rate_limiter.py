"""The limiter and the retry loop on Trio's virtual clock (`autojump_clock`).

Calls here are instant, so every second that passes is the limiter's doing: N calls
against a budget of R per minute must take exactly the time the budget allows.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Any

import pytest
import trio
import trio.testing

from agents import (
    AuthenticationFailed,
    CallRecorder,
    CallRequest,
    CallRunner,
    LimiterOptions,
    ProviderError,
    RateLimited,
    RateLimiter,
    RetriesExhausted,
    RetryPolicy,
    TokenBucket,
    Usage,
    parse_duration,
)
from agents.errors import LLMError
from agents.llm._rate_limiter import retry_after_from

TIMEOUT_S = 3600  # virtual seconds: the clock jumps, so this costs nothing

Clock = trio.testing.MockClock


def limiter_with(**options: Any) -> RateLimiter:
    """A limiter without the safety margin (unless given), so timings are exact."""
    return RateLimiter(dataclasses.replace(LimiterOptions(safety_margin_s=0.0), **options))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        ("5x", None),
    ],
    ids=["s", "m-s", "ms", "h-m-s", "plain", "empty", "word", "bad-unit"],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "150", "retry-after": "1"}, 0.15),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
    ids=["seconds", "ms-wins", "http-date", "absent"],
)
def test_retry_after_from_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_from(headers) == seconds


def test_bucket_reserves_into_debt_and_reports_the_wait() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0)
    assert bucket.reserve(4, now=0.0) == 0.0
    assert bucket.reserve(1, now=0.0) == 0.5
    assert bucket.reserve(1, now=0.0) == 1.0
    assert bucket.level(now=1.0) == 0.0


def test_a_charge_after_the_fact_is_at_most_one_bucket() -> None:
    """A reply reporting an absurd count costs at most a full bucket's refill time."""
    bucket = TokenBucket(rate=2.0, capacity=4.0)
    bucket.give_back(-(2**53), now=0.0)
    assert bucket.level(now=0.0) == 0.0  # 4 - 4: one bucket of debt at most
    assert bucket.reserve(4, now=2.0) == 0.0  # refilled two seconds later


def test_bucket_try_take_takes_nothing_when_short() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2.0)
    assert bucket.try_take(2, now=0.0) == 0.0
    assert bucket.try_take(1, now=0.5) == 0.5
    assert bucket.level(now=0.5) == 0.5


async def _call_many(limiter: RateLimiter, n: int, tokens: int = 1) -> list[float]:
    """Acquire and release `n` permits concurrently; the virtual time each got its permit."""
    times: list[float] = []

    async def one() -> None:
        permit = await limiter.acquire(tokens)
        times.append(trio.current_time())
        limiter.release(permit, used_tokens=tokens)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
            await trio.lowlevel.checkpoint()
    return times


@pytest.mark.parametrize(("burst_s", "burst"), [(1.0, 1), (10.0, 10)], ids=["burst-1", "burst-10"])
async def test_120_calls_at_60_rpm_take_what_the_budget_allows(
    autojump_clock: Clock, burst_s: float, burst: int
) -> None:
    limiter = limiter_with(rpm=60, tpm=10**9, max_concurrency=200, burst_s=burst_s)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        times = await _call_many(limiter, 120)
    elapsed = max(times) - start
    assert elapsed == pytest.approx(120 - burst, abs=0.01)
    assert sorted(times)[:burst] == pytest.approx([start] * burst, abs=0.01)


PLAN_PROMPT_TOKENS = 4_040  # a plan prompt with the shipped tool catalog


async def test_plan_calls_spread_over_a_minute_never_wait_under_the_default_budget(
    autojump_clock: Clock,
) -> None:
    limiter = RateLimiter(LimiterOptions(rpm=500, tpm=200_000))  # the shipped defaults
    waits = []
    with trio.fail_after(TIMEOUT_S):
        for _ in range(20):
            asked = trio.current_time()
            permit = await limiter.acquire(PLAN_PROMPT_TOKENS)
            waits.append(trio.current_time() - asked)
            limiter.release(permit, used_tokens=PLAN_PROMPT_TOKENS)
            await trio.sleep(3.0)
    assert waits == [0.0] * 20
    assert limiter.statistics().waited_s == 0.0


async def test_a_burst_of_plan_calls_takes_what_the_minute_budget_allows(
    autojump_clock: Clock,
) -> None:
    options = LimiterOptions(rpm=500, tpm=200_000, max_concurrency=200)
    limiter = RateLimiter(options)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        times = sorted(await _call_many(limiter, 200, tokens=PLAN_PROMPT_TOKENS))
    offsets = [t - start for t in times]
    free = int(options.tpm // PLAN_PROMPT_TOKENS)  # what a full bucket holds: no wait
    rate = options.tpm / 60
    assert offsets[:free] == [0.0] * free
    # each later call waits until the budget has refilled its tokens (plus the margin)
    expected = [
        (PLAN_PROMPT_TOKENS * (i + 1) - options.tpm) / rate + options.safety_margin_s
        for i in range(free, 200)
    ]
    assert offsets[free:] == pytest.approx(expected, abs=1e-6)


async def test_calls_are_spaced_evenly_at_the_budget(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=600, tpm=10**9, max_concurrency=50, burst_s=0.1)
    with trio.fail_after(TIMEOUT_S):
        times = sorted(await _call_many(limiter, 61))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.1] * 60, abs=1e-6)


async def test_safety_margin_shifts_throttled_calls_without_lowering_the_rate(
    autojump_clock: Clock,
) -> None:
    limiter = limiter_with(rpm=600, tpm=10**9, burst_s=0.1, safety_margin_s=0.05)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        times = sorted(await _call_many(limiter, 11))
    offsets = [t - start for t in times]
    assert offsets == pytest.approx([0.0] + [0.1 * i + 0.05 for i in range(1, 11)], abs=1e-6)


async def test_token_budget_paces_big_calls(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=10**6, tpm=60_000, max_concurrency=50, burst_s=1.0)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        times = await _call_many(limiter, 11, tokens=1000)
    assert max(times) - start == pytest.approx(10.0, abs=0.01)


async def test_reported_usage_corrects_the_token_estimate(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=10**6, tpm=60_000, max_concurrency=50, burst_s=1.0)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        for _ in range(10):
            permit = await limiter.acquire(1000)
            limiter.release(permit, used_tokens=100)  # estimated 1000, used 100
    assert trio.current_time() - start == pytest.approx(0.9, abs=0.01)


async def test_retry_after_pauses_every_caller_at_least_that_long(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=6000, tpm=10**9)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        limiter.rate_limited(retry_after=7.5)
        times = await _call_many(limiter, 3)
    assert min(times) - start >= 7.5


async def test_remaining_zero_waits_for_the_reset(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=6000, tpm=10**9)
    headers = {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        limiter.observe(headers)
        limiter.release(await limiter.acquire(1))
    assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)


async def test_remaining_header_caps_the_local_budget(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=60, tpm=10**9, burst_s=10)
    with trio.fail_after(TIMEOUT_S):
        limiter.observe({"x-ratelimit-remaining-requests": "2"})
        start = trio.current_time()
        times = await _call_many(limiter, 4)
    assert sorted(t - start for t in times) == pytest.approx([0, 0, 1, 2], abs=0.01)


async def test_a_429_halves_concurrency_and_successes_restore_it(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=10**6, tpm=10**9, max_concurrency=8, increase_every=4)
    limits = []
    for _ in range(4):
        limiter.rate_limited(retry_after=0.0)
        limits.append(limiter.statistics().concurrency_limit)
    assert limits == [4, 2, 1, 1]
    with trio.fail_after(TIMEOUT_S):
        await _call_many(limiter, 4 * 7)
    assert limiter.statistics().concurrency_limit == 8


async def test_concurrency_limit_is_enforced(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=10**6, tpm=10**9, max_concurrency=8, increase_every=1000)
    limiter.rate_limited(retry_after=0.0)  # 8 -> 4, and no recovery within this test
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        permit = await limiter.acquire(1)
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(1)
        in_flight -= 1
        limiter.release(permit)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
    assert peak == 4


async def test_a_cancelled_waiter_gives_its_reservation_back(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=60, tpm=10**9, burst_s=1.0)
    with trio.fail_after(TIMEOUT_S):
        limiter.release(await limiter.acquire(1))  # the burst of 1 is used
        with trio.move_on_after(0.5):
            await limiter.acquire(1)  # reserved the slot at t+1, then cancelled
        start = trio.current_time()
        limiter.release(await limiter.acquire(1))
    assert trio.current_time() - start == pytest.approx(0.5, abs=0.01)


async def test_waiters_do_not_block_others_from_settling(autojump_clock: Clock) -> None:
    """Nobody holds a lock while sleeping: a waiter never stops release or observe."""
    limiter = limiter_with(rpm=60, tpm=10**9, burst_s=1)
    held = await limiter.acquire(1)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire, 1)  # sleeps ~1 s for its reservation
            await trio.sleep(0.1)
            limiter.observe({"x-ratelimit-remaining-tokens": "5"})
            limiter.release(held)
            assert limiter.statistics().in_flight == 1
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(0.9, abs=0.01)


# --- the retry loop -------------------------------------------------------------------


DEFAULT_POLICY = RetryPolicy(max_retries=3)


class Script:
    """An attempt function failing with the given errors, then succeeding."""

    def __init__(self, *errors: LLMError) -> None:
        self.errors = list(errors)
        self.attempts = 0

    async def __call__(self) -> tuple[str, Usage]:
        self.attempts += 1
        await trio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        return "done", Usage(10, 5)


def runner(
    policy: RetryPolicy = DEFAULT_POLICY, limiter: RateLimiter | None = None
) -> tuple[CallRunner, CallRecorder]:
    recorder = CallRecorder()
    return CallRunner(recorder, policy, limiter, rng=random.Random(1)), recorder


REQUEST = CallRequest(purpose="plan", run_id=None, model="m", estimated_tokens=10)


async def test_429_with_retry_after_is_waited_out_and_counted(autojump_clock: Clock) -> None:
    limiter = limiter_with(rpm=6000, tpm=10**9)
    run, recorder = runner(limiter=limiter)
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        done = await run.call(REQUEST, Script(RateLimited("slow down", retry_after=3.0)))
    assert trio.current_time() - start >= 3.0
    assert (done.value, done.retries) == ("done", 1)
    assert limiter.statistics().rate_limited == 1
    assert recorder.statistics().retries == 1


async def test_backoff_is_exponential_with_jitter(autojump_clock: Clock) -> None:
    run, _ = runner(RetryPolicy(max_retries=3, base_delay_s=1.0, max_delay_s=60))
    errors = [ProviderError(503, "busy") for _ in range(3)]
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        done = await run.call(REQUEST, Script(*errors))
    # waits of 0.5-1, 1-2 and 2-4 seconds
    assert 3.5 <= trio.current_time() - start <= 7.0
    assert done.retries == 3


async def test_retries_run_out_with_a_typed_error_and_a_recorded_outcome(
    autojump_clock: Clock,
) -> None:
    run, recorder = runner(RetryPolicy(max_retries=2, base_delay_s=0.1))
    script = Script(*(ProviderError(500, "boom") for _ in range(5)))
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(RetriesExhausted) as raised:
            await run.call(REQUEST, script)
    assert (raised.value.attempts, script.attempts) == (3, 3)
    assert isinstance(raised.value.last_error, ProviderError)
    assert recorder.statistics().failures == 1


async def test_the_deadline_bounds_the_retries(autojump_clock: Clock) -> None:
    run, _ = runner(RetryPolicy(max_retries=50, base_delay_s=1.0, max_delay_s=8, deadline_s=20))
    script = Script(*(ProviderError(502, "bad gateway") for _ in range(50)))
    with trio.fail_after(TIMEOUT_S):
        start = trio.current_time()
        with pytest.raises(RetriesExhausted, match="deadline of 20 s"):
            await run.call(REQUEST, script)
    assert trio.current_time() - start <= 20


async def test_errors_not_worth_retrying_are_raised_at_once(autojump_clock: Clock) -> None:
    run, _ = runner()
    script = Script(AuthenticationFailed("KEY", "refused"))
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(AuthenticationFailed):
            await run.call(REQUEST, script)
    assert script.attempts == 1


def test_jitter_stays_within_half_to_full_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=10.0)
    rng = random.Random(7)
    for attempt in range(6):
        ceiling = min(10.0, 2.0**attempt)
        delays = [policy.delay(ProviderError(500, "x"), attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
