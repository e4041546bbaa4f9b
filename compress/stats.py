"""Statistics for quality figures: intervals, paired comparisons, how many examples a
decision needs. numpy and scipy only; every resampling is seeded.

- `wilson`: the Wilson score interval of a proportion (accuracy, agreement).
- `bootstrap`: a percentile bootstrap over resampling *units* (examples, documents,
  windows of text). The statistic is given the drawn unit indices, so one function serves
  plain, paired (several arrays resampled together) and clustered resampling (documents
  whose pairs are scored together).
- `mcnemar_exact`: the exact McNemar p-value of two classifiers on the same examples,
  a two-sided binomial test on the discordant pairs.
- `examples_needed`: how many units an interval of the observed width would need to
  exclude a threshold, using that the width scales as 1/sqrt(N).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float
    method: str          # wilson | bootstrap | paired-bootstrap | ...

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def check_confidence(level: float) -> float:
    if not isinstance(level, (int, float)) or not math.isfinite(level) or not 0 < level < 1:
        raise ValueError(f"confidence level must be a number between 0 and 1 (exclusive), "
                         f"got {level!r}")
    return float(level)


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of successes / n."""
    from scipy.stats import binomtest

    check_confidence(confidence)
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                         method="wilson")
    return Interval(float(ci.low), float(ci.high), confidence, "wilson")


def bootstrap(statistic: Callable[[np.ndarray], float], n_units: int,
              confidence: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = BOOTSTRAP_SEED, method: str = "bootstrap") -> Interval:
    """Percentile bootstrap: `statistic(idx)` is evaluated on unit indices drawn with
    replacement (idx has n_units entries), from a numpy generator seeded with `seed`, so
    the same data always give the same interval. Resamples whose statistic is not finite
    (for instance a correlation of constant values) are dropped. (A plain loop: scipy's
    bootstrap with a non-vectorized statistic is about 10x slower for the same draws.)"""
    check_confidence(confidence)
    if n_units < 2:
        raise ValueError("a bootstrap needs at least two units")
    rng = np.random.default_rng(seed)
    dist = np.array([statistic(rng.integers(0, n_units, n_units))
                     for _ in range(n_resamples)], dtype=float)
    dist = dist[np.isfinite(dist)]
    if not len(dist):
        return Interval(float("nan"), float("nan"), confidence, method)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return Interval(float(low), float(high), confidence, method)


def mcnemar_exact(candidate_correct, baseline_correct) -> tuple[float, int, int]:
    """Exact McNemar test: (p-value, b, c) where b = examples only the baseline got right
    and c = examples only the candidate got right. p = 1 when there is no discordant pair."""
    from scipy.stats import binomtest

    cand = np.asarray(candidate_correct, dtype=bool)
    base = np.asarray(baseline_correct, dtype=bool)
    b = int(np.sum(base & ~cand))
    c = int(np.sum(cand & ~base))
    if b + c == 0:
        return 1.0, b, c
    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue), b, c


def examples_needed(n: int, half_width: float, gap: float) -> int | None:
    """Units an interval of this half-width at n units would need to have shrunk to `gap`
    (the distance from the observed value to the threshold), as the width scales as
    1/sqrt(N): n * (half_width / gap)^2. None when the gap is zero or nothing is known."""
    if not (n > 0 and half_width > 0 and gap > 0) or not math.isfinite(half_width):
        return None
    return max(n + 1, math.ceil(n * (half_width / gap) ** 2))
