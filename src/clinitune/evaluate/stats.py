"""Paired comparisons between two models on the same examples.

- Paired bootstrap (resampling examples) for a difference of means or of token-weighted ratios,
  reporting the observed difference and a 95% percentile interval.
- Exact McNemar test (two-sided binomial on discordant pairs) for accuracies, reported with the
  paired-bootstrap interval of the accuracy difference.
- Paired bootstrap of binary-classification metrics (precision, recall, F1, MCC, balanced
  accuracy, AUROC), each recomputed on every resample of the examples.
Why by hand: these are a few vectorized lines each; scipy's ``bootstrap`` resamples one
statistic at a time (thousands of sklearn calls here) and has no paired McNemar.
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


def accuracy_comparison(
    correct_a: Sequence[bool], correct_b: Sequence[bool], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """McNemar's exact test (``significant`` is its p < 0.05) with the paired-bootstrap 95%
    interval of the accuracy difference (b - a)."""
    out = mcnemar_exact(correct_a, correct_b)
    if correct_a:
        ci = paired_bootstrap_mean(
            [float(x) for x in correct_a], [float(x) for x in correct_b], n_boot=n_boot, seed=seed
        )
        out.update(ci_low=ci["ci_low"], ci_high=ci["ci_high"])
    return out


def _binary_stats(y: np.ndarray, p: np.ndarray, s: np.ndarray | None) -> dict[str, np.ndarray]:
    """Metrics per row of (resamples x examples) boolean arrays; nan where undefined.
    Conventions follow ``clinitune.evaluate.classify.binary_metrics`` (sklearn): precision /
    recall / F1 are 0 with a zero denominator; MCC and balanced accuracy are undefined unless
    both classes occur in gold, MCC is 0 when a prediction column is empty."""
    tp = (y & p).sum(1).astype(float)
    fp = (~y & p).sum(1).astype(float)
    fn = (y & ~p).sum(1).astype(float)
    tn = (~y & ~p).sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        rec = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        both = (tp + fn > 0) & (tn + fp > 0)
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(den > 0, (tp * tn - fp * fn) / den, 0.0)
        mcc = np.where(both, mcc, np.nan)
        bal = np.where(both, (tp / (tp + fn) + tn / (tn + fp)) / 2, np.nan)
    out = {"precision": prec, "recall": rec, "f1": f1, "mcc": mcc, "balanced_accuracy": bal}
    if s is not None:
        from scipy.stats import rankdata

        ranks = rankdata(s, axis=1)  # average ranks: ties count one half, as in roc_auc_score
        npos, nneg = y.sum(1), (~y).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (ranks * y).sum(1) - npos * (npos + 1) / 2
            out["auroc"] = np.where(both, u / (npos * nneg), np.nan)
    return out


def paired_bootstrap_binary(
    gold: Sequence[bool],
    pred_a: Sequence[bool],
    pred_b: Sequence[bool],
    scores_a: Sequence[float] | None = None,
    scores_b: Sequence[float] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per metric: the difference b - a on all examples and its paired-bootstrap 95% interval
    (resamples where the metric is undefined for either model are left out, and counted).
    AUROC only when both models have scores. ``significant``: the interval excludes 0."""
    y = np.asarray(gold, dtype=bool)
    pa, pb = np.asarray(pred_a, dtype=bool), np.asarray(pred_b, dtype=bool)
    with_scores = scores_a is not None and scores_b is not None
    sa = np.asarray(scores_a, dtype=float) if with_scores else None
    sb = np.asarray(scores_b, dtype=float) if with_scores else None
    n = len(y)
    if n == 0:
        return {}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    whole = np.arange(n)[None, :]

    def stats(ix: np.ndarray, p: np.ndarray, sc: np.ndarray | None) -> dict[str, np.ndarray]:
        return _binary_stats(y[ix], p[ix], None if sc is None else sc[ix])

    obs_a, obs_b = stats(whole, pa, sa), stats(whole, pb, sb)
    boot_a, boot_b = stats(idx, pa, sa), stats(idx, pb, sb)
    out: dict[str, dict[str, float]] = {}
    for k in obs_a:
        obs = float(obs_b[k][0] - obs_a[k][0])
        if math.isnan(obs):
            continue
        d = boot_b[k] - boot_a[k]
        d = d[~np.isnan(d)]
        if len(d) < n_boot // 2:  # too few resamples where the metric is defined
            continue
        lo, hi = np.percentile(d, [2.5, 97.5])
        out[k] = {
            "diff": obs,
            "ci_low": float(lo),
            "ci_high": float(hi),
            "significant": bool(lo > 0 or hi < 0),
            "n": n,
            "resamples_used": len(d),
        }
    return out
