"""Client-side rate limiting: RPM and TPM token buckets, server hints, AIMD concurrency.

Budgets are token buckets refilled continuously. A caller *reserves* its request and
its estimated tokens at once (the level may go below zero) and then sleeps until the
reservation is covered, so callers are served in arrival order, nobody is woken in
vain, and no lock is held while anyone sleeps: reserving is plain synchronous code,
atomic under Trio. A cancelled waiter gives its reservation back. After the call the
estimate is corrected by the usage the response reports.

The endpoint's word wins over our own arithmetic: `x-ratelimit-remaining-*` caps the
buckets, a 429's `Retry-After` / `retry-after-ms` pauses every caller, and a 429
halves the allowed concurrency (to at least 1), which grows back by one after every
`increase_every` successes up to `max_concurrency` (additive increase, multiplicative
decrease).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

Clock = Callable[[], float]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Seconds in an OpenAI-style duration ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5")."""
    if text is None:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def retry_after_from(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: `retry-after-ms`, else `retry-after` in seconds."""
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000)
    seconds = _number(headers.get("retry-after"))
    return None if seconds is None else max(0.0, seconds)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class TokenBucket:
    """A budget of `rate` units per second holding at most `capacity`; no awaits inside.

    Time comes in as `now` so the same bucket serves the client (Trio's clock, virtual
    under `autojump_clock`) and the simulator.
    """

    def __init__(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be positive, got {rate} and {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._level = capacity
        self._updated: float | None = None

    def level(self, now: float) -> float:
        self._refill(now)
        return self._level

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount` now, in debt if need be; seconds until the debt is paid off."""
        self._refill(now)
        self._level -= amount
        return max(0.0, -self._level / self.rate)

    def try_take(self, amount: float, now: float) -> float:
        """Take `amount` if it is there and return 0, else take nothing and return the wait."""
        self._refill(now)
        if self._level >= amount:
            self._level -= amount
            return 0.0
        return (min(amount, self.capacity) - self._level) / self.rate

    def give_back(self, amount: float, now: float) -> None:
        """Return units (a cancelled reservation, an overestimate); negative charges more,
        at most one full bucket: one reply reporting an absurd count must not stop every
        later call for longer than the bucket takes to refill."""
        self._refill(now)
        self._level = min(self.capacity, self._level + max(amount, -self.capacity))

    def cap(self, level: float, now: float) -> None:
        """Lower the level to what the server says is left; never raises it."""
        self._refill(now)
        self._level = min(self._level, level)

    def time_to_full(self, now: float) -> float:
        return (self.capacity - self.level(now)) / self.rate


class ConcurrencyGate:
    """A semaphore whose limit can move while tasks hold or wait for it (for AIMD)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.in_flight >= self.limit:
            await self._lot.park()
        self.in_flight += 1
        await trio.lowlevel.cancel_shielded_checkpoint()

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        if free > 0:
            self._lot.unpark(count=free)


@dataclass(frozen=True, slots=True)
class LimiterOptions:
    """Budgets per minute; the buckets hold `burst_s` seconds' worth (at least 1 request).

    `burst_s` is 60 by default: a bucket holds the whole per-minute budget, as the
    providers state and refill it, so a request the minute's budget has room for never
    waits (a lone plan prompt of ~4,000 tokens is more than one second of a 200k TPM
    budget, which a 1 s bucket made wait ~1 s on every plan call). Sustained load above
    the budget is still smoothed to the refill rate.

    `safety_margin_s` is added to every wait for budget. Our bucket and the server's
    run on different clocks: ours counts from when we *grant* a burst, the server's from
    when the first of it *arrives*. Calls granted together leave one by one (the SDK
    spends milliseconds of CPU on each before it writes), so the server's refill lags
    ours, and a later call that leaves promptly would arrive just before its token and
    be refused. The margin shifts every throttled call later by a constant: it adds
    that much latency to calls that wait anyway, and costs no throughput. Measured at a
    600 RPM budget against a 600 RPM simulator on a loaded 2-core machine: 0.05 s let a
    429 through in most runs, 0.25 s in 1 run of 8, 0.5 s in none of 8 (RESULTS.md).
    """

    rpm: int = 500
    tpm: int = 200_000
    max_concurrency: int = 8
    burst_s: float = 60.0
    increase_every: int = 8
    default_backoff_s: float = 1.0
    safety_margin_s: float = 0.5


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    concurrency_limit: int
    in_flight: int
    requests_available: float
    tokens_available: float
    paused_for: float
    rate_limited: int
    waited_s: float


@dataclass(slots=True)
class Permit:
    """One admitted request: what it reserved, so it can be settled or given back."""

    tokens: int
    settled: bool = False


class RateLimiter:
    """RPM/TPM buckets, server hints and AIMD concurrency; see the module docstring."""

    def __init__(self, options: LimiterOptions = LimiterOptions(), clock: Clock | None = None):
        self.options = options
        self._clock = clock or trio.current_time
        self._requests = TokenBucket(options.rpm / 60, max(1.0, options.rpm / 60 * options.burst_s))
        self._tokens = TokenBucket(options.tpm / 60, max(1.0, options.tpm / 60 * options.burst_s))
        self._gate = ConcurrencyGate(options.max_concurrency)
        self._paused_until = -math.inf
        self._successes = self._rate_limited = 0
        self._waited = 0.0

    async def acquire(self, tokens: int) -> Permit:
        """Wait for a concurrency slot, a request and `tokens` of budget; FIFO by arrival."""
        await self._gate.acquire()
        try:
            await self._wait_for_budget(tokens)
        except BaseException:
            self._gate.release()
            raise
        return Permit(tokens)

    async def _wait_for_budget(self, tokens: int) -> None:
        await self._wait_out_pause()
        now = self._clock()
        wait = max(self._requests.reserve(1, now), self._tokens.reserve(tokens, now))
        if wait > 0:
            wait += self.options.safety_margin_s
        try:
            await self._sleep(wait)
            await self._wait_out_pause()
        except BaseException:
            self._requests.give_back(1, self._clock())
            self._tokens.give_back(tokens, self._clock())
            raise

    async def _wait_out_pause(self) -> None:
        """Sleep while a server-requested pause lasts (it may be extended meanwhile)."""
        while (pause := self._paused_until - self._clock()) > 0:
            await self._sleep(pause)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._waited += seconds
        await trio.sleep(seconds)

    def release(self, permit: Permit, *, used_tokens: int | None = None, ok: bool = True) -> None:
        """Settle a permit once: correct the token estimate, count the success."""
        if permit.settled:
            return
        permit.settled = True
        self._gate.release()
        if used_tokens is not None:
            self._tokens.give_back(permit.tokens - used_tokens, self._clock())
        if ok:
            self._on_success()

    def _on_success(self) -> None:
        self._successes += 1
        if self._successes >= self.options.increase_every:
            self._successes = 0
            self._gate.set_limit(min(self.options.max_concurrency, self._gate.limit + 1))

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone, drain the request bucket, halve the concurrency."""
        self._rate_limited += 1
        now = self._clock()
        pause = self.options.default_backoff_s if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, now + pause)
        self._requests.cap(0.0, now)
        self._successes = 0
        self._gate.set_limit(max(1, self._gate.limit // 2))

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take in the endpoint's `x-ratelimit-*` view of what is left."""
        now = self._clock()
        for kind, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is None:
                continue
            bucket.cap(remaining, now)
            if remaining < 1:
                self._pause_for_reset(headers, kind, now)

    def _pause_for_reset(self, headers: Mapping[str, str], kind: str, now: float) -> None:
        """Nothing left: wait for one unit, i.e. the reset time spread over the limit."""
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            return
        limit = _number(headers.get(f"x-ratelimit-limit-{kind}")) or 1.0
        self._paused_until = max(self._paused_until, now + reset / max(1.0, limit))

    def statistics(self) -> LimiterStatistics:
        now = self._clock()
        return LimiterStatistics(
            concurrency_limit=self._gate.limit,
            in_flight=self._gate.in_flight,
            requests_available=self._requests.level(now),
            tokens_available=self._tokens.level(now),
            paused_for=max(0.0, self._paused_until - now),
            rate_limited=self._rate_limited,
            waited_s=self._waited,
        )
