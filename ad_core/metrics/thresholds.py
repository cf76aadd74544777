"""Ways to turn anomaly scores into a decision, and the confusion matrix that decision gives.

Every rule reads `score >= threshold` as anomalous. Rules that look at labels (F1, Youden) need a
labelled set with both classes; rules that look only at normal scores (percentile, mean + k sigma)
can be set without any anomaly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ad_core.metrics.curves import as_labels, as_scores, roc_curve, scores_and_labels, to_numpy


def _f1_at(s: np.ndarray, y: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """F1 at each candidate threshold, counted with sorted searches instead of one pass per threshold."""
    positives = np.sort(s[y == 1])
    negatives = np.sort(s[y == 0])
    tp = positives.shape[0] - np.searchsorted(positives, candidates, side="left")
    fp = negatives.shape[0] - np.searchsorted(negatives, candidates, side="left")
    return 2.0 * tp / (tp + fp + positives.shape[0])


def _best_f1(s: np.ndarray, y: np.ndarray, candidates: np.ndarray) -> dict[str, float]:
    candidates = np.unique(candidates)
    f1 = _f1_at(s, y, candidates)
    best = int(np.argmax(f1))  # among equal F1, the lowest threshold
    return {"value": float(candidates[best]), "f1": float(f1[best])}


def _grid_size(n: int) -> int:
    if int(n) < 2:
        raise ValueError(f"n must be at least 2 candidate thresholds, got {n}")
    return int(n)


def f1_threshold_percentile(scores: Any, labels: Any, n: int = 1000) -> dict[str, float]:
    """Best-F1 threshold among `n` percentiles of the scores: dense where the scores are dense."""
    s, y = scores_and_labels(scores, labels, "the F1 threshold")
    return _best_f1(s, y, np.percentile(s, np.linspace(0.0, 100.0, _grid_size(n))))


def f1_threshold_uniform(scores: Any, labels: Any, n: int = 1000) -> dict[str, float]:
    """Best-F1 threshold on a uniform grid of `n` values from the lowest to the highest score."""
    s, y = scores_and_labels(scores, labels, "the F1 threshold")
    return _best_f1(s, y, np.linspace(s.min(), s.max(), _grid_size(n)))


def youden_threshold(scores: Any, labels: Any) -> dict[str, float]:
    """The ROC point furthest above chance (max TPR - FPR), with its sensitivity and specificity."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # drop the +inf start: not a usable threshold
    best = int(np.argmax(tpr - fpr))
    return {
        "value": float(thresholds[best]),
        "sensitivity": float(tpr[best]),
        "specificity": float(1.0 - fpr[best]),
    }


def percentile_threshold(normal_scores: Any, q: float = 95) -> dict[str, float]:
    """The q-th percentile of normal scores: accepts about (100 - q)% false alarms, needs no anomaly."""
    if not 0.0 <= float(q) <= 100.0:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    s = as_scores(normal_scores, "normal scores")
    return {"value": float(np.percentile(s, float(q)))}


def normal_fpr_threshold(normal_values: Any, fpr: float = 0.01) -> dict[str, float]:
    """The lowest threshold at which at most `fpr` of these normal values are flagged: no label is needed.

    With n values, floor(fpr * n) false positives are allowed; the threshold is the next float32 above the
    highest value that must stay normal, so `value >= threshold` holds for at most that many (the maps and
    scores are float32, so the threshold stays exact once stored). Returns the value, the target, and the
    FPR it actually reaches on these values.
    """
    if not 0.0 <= float(fpr) < 1.0:
        raise ValueError(f"the target false-positive rate must lie in [0, 1), got {fpr}")
    s = to_numpy(normal_values).astype(np.float32, copy=False).reshape(-1)
    if s.size == 0:
        raise ValueError("normal_fpr needs normal images: the validation set has none")
    if not np.isfinite(s).all():
        raise ValueError("normal values contain NaN/Inf: the model diverged or the input was invalid")
    allowed = int(np.floor(float(fpr) * s.size))
    keep = s.size - allowed - 1  # index (ascending) of the highest value that must stay below the threshold
    highest_normal = np.partition(s, keep)[keep]
    value = np.nextafter(highest_normal, np.float32(np.inf))
    return {"value": float(value), "target_fpr": float(fpr), "fpr": float(np.mean(s >= value)),
            "normal_count": int(s.size)}


def mean_ksigma_threshold(normal_train_scores: Any, k: float = 3.0) -> dict[str, float]:
    """Mean + k standard deviations (population, ddof=0) of normal training scores."""
    s = as_scores(normal_train_scores, "train scores")
    mean, std = float(s.mean()), float(s.std())
    return {"value": mean + float(k) * std, "k": float(k), "mean": mean, "std": std}


def confusion(scores: Any, labels: Any, threshold: float) -> dict[str, float | int]:
    """Counts and rates at `score >= threshold`; a rate with an empty denominator is 0, never a warning."""
    s = as_scores(scores)
    y = as_labels(labels, s.shape[0]).astype(bool)
    predicted = s >= float(threshold)
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = int(np.sum(~predicted & ~y))
    return {
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "accuracy": (tp + tn) / s.shape[0],
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2.0 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }
