"""Statistics the tests judge sampled counts by."""

from __future__ import annotations

import math


def binomial_interval(n: int, p: float = 0.01, level: float = 0.999) -> tuple[int, int]:
    """The central `level` interval of Binomial(n, p), exactly."""
    tail = (1 - level) / 2
    logs = [
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
        for k in range(n + 1)
    ]
    cdf, low, high = 0.0, 0, n
    for k, lp in enumerate(logs):
        cdf += math.exp(lp)
        if cdf < tail:
            low = k + 1
        if cdf >= 1 - tail:
            high = k
            break
    return low, high
