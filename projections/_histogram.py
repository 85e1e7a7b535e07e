"""A fixed-bucket latency histogram: bounded memory, mergeable, deterministic.

Buckets grow geometrically by 2 % from 0.1 ms to ~1.3 hours, so a percentile read from
it is within 2 % of the true value (fine enough to set beside a client's exact figures,
as `autoagent bench` does), and the same events always give the same state (which
`replay --verify` relies on).
"""

from __future__ import annotations

import math
from typing import Any

_MIN_S = 1e-4
_GROWTH = 1.02
_BUCKETS = int(math.log(5000 / _MIN_S, _GROWTH)) + 2


def _bucket(seconds: float) -> int:
    if seconds <= _MIN_S:
        return 0
    return min(_BUCKETS - 1, 1 + int(math.log(seconds / _MIN_S, _GROWTH)))


def _upper(bucket: int) -> float:
    return _MIN_S * _GROWTH**bucket


class LatencyHistogram:
    """Counts of observations per bucket, plus exact count, sum and max."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        bucket = _bucket(seconds)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def percentile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-th percentile (0 when empty)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(_upper(bucket), self.max)
        return self.max

    def count_at_most(self, seconds: float) -> int:
        """Observations in buckets whose upper bound is <= `seconds` (Prometheus `le`)."""
        return sum(c for bucket, c in self.counts.items() if _upper(bucket) <= seconds)

    def summary(self) -> dict[str, float]:
        mean = self.total / self.count if self.count else 0.0
        return {
            "count": self.count,
            "mean": mean,
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max,
        }

    def to_data(self) -> dict[str, Any]:
        return {"counts": self.counts, "count": self.count, "total": self.total, "max": self.max}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> LatencyHistogram:
        histogram = cls()
        histogram.counts = {int(k): int(v) for k, v in data["counts"].items()}
        histogram.count, histogram.total, histogram.max = data["count"], data["total"], data["max"]
        return histogram
