"""Uncertainty: standard errors, spread over seeds, and paired comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
TIE_TOLERANCE = 1e-12  # differences this small are ties in the sign test


def mean_se(values: NDArray[np.floating]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n)); se is 0 below two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def seed_spread(per_seed: Sequence[float]) -> dict[str, float]:
    """Mean, sample std, min and max of one number measured once per seed."""
    values = np.asarray(per_seed, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "seeds": int(values.size),
    }


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least this uneven | no difference)."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0)
        for i in range(low + 1)
    ]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(term - top) for term in log_terms)
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True, slots=True)
class PairedResult:
    """`a - b` over paired units (events or users)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    se: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    sign_p: float
    clusters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cluster_bootstrap_ci(
    diffs: FloatArray,
    groups: NDArray[np.int64],
    rng: np.random.Generator,
    resamples: int = 2000,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the mean difference, resampling whole groups (e.g. users).

    Events of one user are not independent; resampling users keeps that correlation.
    """
    labels, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=diffs, minlength=labels.size)
    counts = np.bincount(inverse, minlength=labels.size).astype(np.float64)
    draws = rng.integers(0, labels.size, size=(resamples, labels.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_comparison(
    a: NDArray[np.floating],
    b: NDArray[np.floating],
    groups: NDArray[np.int64] | None = None,
    rng: np.random.Generator | None = None,
    resamples: int = 2000,
) -> PairedResult:
    """Paired differences `a - b` per unit: mean, SE, a bootstrap 95% CI, a sign test.

    `groups` (e.g. the user of each event) makes the bootstrap resample groups;
    without it every unit is its own group. `resamples=0` skips the bootstrap (NaN CI).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same shape")
    diffs = a - b
    groups = np.arange(diffs.size) if groups is None else np.asarray(groups)
    rng = rng if rng is not None else np.random.default_rng(0)
    mean, se = mean_se(diffs)
    if diffs.size and resamples > 0:
        low, high = cluster_bootstrap_ci(diffs, groups, rng, resamples)
    else:
        low = high = float("nan")
    wins = int(np.count_nonzero(diffs > TIE_TOLERANCE))
    losses = int(np.count_nonzero(diffs < -TIE_TOLERANCE))
    return PairedResult(
        n=int(diffs.size),
        mean_a=float(a.mean()) if a.size else float("nan"),
        mean_b=float(b.mean()) if b.size else float("nan"),
        mean_diff=mean,
        se=se,
        ci_low=low,
        ci_high=high,
        wins=wins,
        losses=losses,
        ties=int(diffs.size) - wins - losses,
        sign_p=sign_test_p(wins, losses),
        clusters=int(np.unique(groups).size),
    )
