"""Classification metrics for yes/no and k-way clinical tasks, and a label-collapse detector.

Metrics come from scikit-learn (precision, recall, F1, MCC, balanced accuracy, AUROC, confusion
matrix). What scikit-learn does not have is the *collapse* check: a fine-tuned model that
answers "no" to every cardiac-arrest question scores 95% accuracy on a 5%-prevalence set while
being useless (the failure reported for the ED-notes model, fixed by a short class-balanced
task fine-tune). :func:`collapse_report` compares the prediction distribution with the gold
one and flags it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["binary_metrics", "collapse_report"]


def binary_metrics(
    gold: Sequence[str],
    pred: Sequence[str],
    *,
    positive: str = "yes",
    scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Precision/recall/F1 of ``positive``, MCC, balanced accuracy, accuracy, confusion matrix
    (rows gold, columns predicted, order [positive, other]) and AUROC from ``scores`` (the
    model's probability of ``positive``) when given and both classes occur in ``gold``."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        matthews_corrcoef,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    if len(gold) != len(pred) or not gold:
        raise ValueError(f"gold ({len(gold)}) and pred ({len(pred)}) must be equal and non-empty")
    y = [g == positive for g in gold]
    p = [x == positive for x in pred]
    prec, rec, f1, _ = precision_recall_fscore_support(
        y, p, average="binary", pos_label=True, zero_division=0
    )
    both = len(set(y)) == 2
    out: dict[str, Any] = {
        "n": len(gold),
        "positive": positive,
        "prevalence": sum(y) / len(y),
        "accuracy": accuracy_score(y, p),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "mcc": float(matthews_corrcoef(y, p)) if both else None,
        "balanced_accuracy": float(balanced_accuracy_score(y, p)) if both else None,
        "confusion": confusion_matrix(y, p, labels=[True, False]).tolist(),
        "auroc": None,
    }
    if scores is not None:
        if len(scores) != len(gold):
            raise ValueError("scores must have one value per example")
        if both:
            out["auroc"] = float(roc_auc_score(y, list(scores)))
    return out


def _entropy(counts: Counter[str], k: int) -> float:
    n = sum(counts.values())
    if n == 0 or k < 2:
        return 0.0
    h = -sum((c / n) * math.log(c / n) for c in counts.values() if c)
    return h / math.log(k)


def collapse_report(
    gold: Sequence[str],
    pred: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    share_threshold: float = 0.95,
) -> dict[str, Any]:
    """Is the model answering (almost) one label regardless of input?

    Returns the majority predicted label and its share, the normalized entropy of predictions
    vs gold (1 = uniform over ``labels``), per-class recall, accuracy and its gain over always
    answering the gold majority label, and ``collapsed``: True when the predictions' majority
    share is at least ``share_threshold`` while the gold majority share is below it, or when
    some gold class with support gets zero recall and accuracy does not beat the majority
    baseline."""
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"gold ({len(gold)}) and pred ({len(pred)}) must be equal and non-empty")
    labels = list(labels) if labels is not None else sorted(set(gold) | set(pred))
    k = len(labels)
    g, p = Counter(gold), Counter(pred)
    n = len(gold)
    pred_major, pred_major_n = p.most_common(1)[0]
    _, gold_major_n = g.most_common(1)[0]
    recall = {
        lab: (sum(1 for a, b in zip(gold, pred, strict=True) if a == lab and b == lab) / g[lab])
        for lab in labels
        if g[lab]
    }
    accuracy = sum(a == b for a, b in zip(gold, pred, strict=True)) / n
    baseline = gold_major_n / n
    dead = [lab for lab, r in recall.items() if r == 0.0]
    collapsed = (pred_major_n / n >= share_threshold and gold_major_n / n < share_threshold) or (
        bool(dead) and accuracy <= baseline
    )
    return {
        "n": n,
        "labels": labels,
        "pred_distribution": {lab: p[lab] / n for lab in labels},
        "gold_distribution": {lab: g[lab] / n for lab in labels},
        "pred_majority": pred_major,
        "pred_majority_share": pred_major_n / n,
        "pred_entropy": _entropy(p, k),
        "gold_entropy": _entropy(g, k),
        "per_class_recall": recall,
        "classes_never_predicted_correctly": dead,
        "accuracy": accuracy,
        "majority_baseline": baseline,
        "gain_over_majority": accuracy - baseline,
        "collapsed": collapsed,
    }
