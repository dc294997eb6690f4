"""Paired comparisons between two models on the same examples.

- Paired bootstrap (resampling examples) for a difference of means or of token-weighted ratios,
  reporting the observed difference and a 95% percentile interval.
- Exact McNemar test (two-sided binomial on discordant pairs) for accuracies.
These are a few lines each; scipy is not needed for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def paired_bootstrap_ratio(
    num_a: Sequence[float],
    den_a: Sequence[float],
    num_b: Sequence[float],
    den_b: Sequence[float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """CI of sum(num_b)/sum(den_b) - sum(num_a)/sum(den_a), resampling example indices
    jointly (e.g. token-weighted loss: num = NLL sums, den = token counts)."""
    na, da, nb, db = (np.asarray(x, dtype=float) for x in (num_a, den_a, num_b, den_b))
    n = len(na)
    obs = nb.sum() / db.sum() - na.sum() / da.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    diffs = nb[idx].sum(1) / db[idx].sum(1) - na[idx].sum(1) / da[idx].sum(1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "diff": float(obs),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "significant": bool(lo > 0 or hi < 0),
        "n": n,
    }


def paired_bootstrap_mean(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    ones = [1.0] * len(a)
    return paired_bootstrap_ratio(a, ones, b, ones, n_boot=n_boot, seed=seed)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float]:
    """Exact two-sided McNemar test: b = A right/B wrong, c = A wrong/B right."""
    b = sum(1 for x, y in zip(correct_a, correct_b, strict=True) if x and not y)
    c = sum(1 for x, y in zip(correct_a, correct_b, strict=True) if y and not x)
    n = b + c
    if n == 0:
        p = 1.0
    else:
        k = min(b, c)
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    diff = (sum(correct_b) - sum(correct_a)) / max(len(correct_a), 1)
    return {
        "diff": diff,
        "a_only": b,
        "b_only": c,
        "p_value": p,
        "significant": p < 0.05,
        "n": len(correct_a),
    }


def bootstrap_ci(
    num: Sequence[float],
    den: Sequence[float] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of sum(num)/sum(den) (a mean when ``den`` is None), resampling
    examples: the interval of one model's metric, drawn as an error bar."""
    x = np.asarray(num, dtype=float)
    d = np.ones_like(x) if den is None else np.asarray(den, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    vals = x[idx].sum(1) / d[idx].sum(1)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def wilson_ci(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (accuracies)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)
